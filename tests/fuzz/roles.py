"""Which token each operation is fuzzed with: the role it admits (the `roles` pass) and one it
refuses (the `wrong-role` pass). Roles as the README's endpoint table states them.

`python3 roles.py PASS` prints Schemathesis's --include-name options for a pass: `roles` fuzzes
every operation; `wrong-role` those with a role to refuse; `anonymous` those that need a token.
"""

import sys

# Per operation (method and path, as the document names it): the role whose token the `roles`
# pass sends, and the role the `wrong-role` pass sends (None: every role is admitted, or none
# is needed). Roles are the README's table. `rotator` is a researcher account of its own: its
# token changes with every successful POST /v1/token/rotate (tracked in after_call below).
ROLES: dict[str, tuple[str | None, str | None]] = {
    "GET /healthz": (None, None),
    "GET /metrics": (None, None),
    "GET /openapi.json": (None, None),
    "GET /v1/register": (None, None),
    "GET /v1/manifests": (None, None),
    "GET /v1/audit/head": (None, None),
    "POST /v1/admin/accounts": ("admin", "governance"),
    "POST /v1/admin/partners": ("admin", "governance"),
    "POST /v1/admin/accounts/{name}/token": ("admin", "researcher"),
    "DELETE /v1/admin/accounts/{name}/token": ("admin", "researcher"),
    "POST /v1/token/rotate": ("rotator", None),
    "GET /v1/datasets": ("researcher", None),
    "GET /v1/datasets/{id}": ("researcher", None),
    "GET /v1/datasets/{id}/versions/{version}": ("partner", None),
    "PUT /v1/datasets/{id}": ("governance", "researcher"),
    "POST /v1/projects": ("governance", "researcher"),
    "PUT /v1/projects/{project}/allocations/{dataset}": ("governance", "admin"),
    "GET /v1/budgets/{dataset}": ("governance", "researcher"),
    "GET /v1/audit": ("governance", "researcher"),
    "GET /v1/audit/verify": ("admin", "partner"),
    "POST /v1/queries/{id}/decision": ("governance", "researcher"),
    "PUT /v1/manifests": ("governance", "researcher"),
    "POST /v1/queries/preview": ("researcher", "governance"),
    "POST /v1/queries": ("researcher", "governance"),
    "GET /v1/queries/{id}": ("researcher", "partner"),
    "PUT /v1/partner/identity": ("partner", "researcher"),
    "GET /v1/partner/rounds": ("partner", "researcher"),
    "GET /v1/partner/rounds/{id}/inbox": ("partner", "governance"),
    "POST /v1/partner/rounds/{id}/messages": ("partner", "governance"),
    "POST /v1/partner/rounds/{id}/decline": ("partner", "researcher"),
    "GET /v1/partners/roster": ("governance", "researcher"),
}


def included(pass_name: str) -> list[str]:
    if pass_name == "roles":
        return []  # every operation of the document
    if pass_name == "wrong-role":
        return [label for label, (_, wrong) in ROLES.items() if wrong is not None]
    if pass_name == "anonymous":
        return [label for label, (right, _) in ROLES.items() if right is not None]
    raise SystemExit(f"roles.py: unknown pass {pass_name!r}")


if __name__ == "__main__":
    for label in included(sys.argv[1]):
        print(f"--include-name={label}")
