"""Schemathesis hooks for the Civic coordinator: whose token each request carries (and keeping
those tokens valid while the fuzzer rotates, reissues and revokes tokens), the known-good
requests of examples.py, and the checks Schemathesis has no built-in for:

- problem_json: every error is RFC 9457 problem+json whose `status` and `type` agree with the
  answer, with Retry-After on 429 and 503;
- known_good_succeeds, SuccessReached: the suite reaches success, not only refusals;
- refused_without_role: no 2xx to a refused role, or to no token;
- positive_refusal_is_semantic: see SEMANTIC_400;
- fuzzer_tokens_alive: the suite never lost one of its own tokens (its results are sound).

run.sh loads this file (SCHEMATHESIS_HOOKS) once per pass, with

- CIVIC_FUZZ_ACCOUNTS: the JSON file run.sh wrote: `tokens` (role -> token) and `names`
  (account name -> role) of the suite's own accounts;
- CIVIC_FUZZ_PASS: `roles` (each operation with a role it admits: the requests reach the
  handlers' logic), `wrong-role` (each operation with a role it refuses: 403) or `anonymous`
  (no Authorization header at all: 401).

The document's operations must be exactly roles.py's (before_load_schema): an operation added
to the coordinator without being classified there fails the run at once, so the suite never
fuzzes a new endpoint with the wrong token, or silently skips it in a pass.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import urllib.parse

import requests
import schemathesis
from schemathesis.auths import AuthContext, set_on_case

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from examples import EXAMPLES  # noqa: E402
from roles import ROLES  # noqa: E402

PASS = os.environ.get("CIVIC_FUZZ_PASS", "roles")
if PASS not in ("roles", "wrong-role", "anonymous"):
    raise RuntimeError(f"CIVIC_FUZZ_PASS={PASS!r}: expected roles, wrong-role or anonymous")

with open(os.environ["CIVIC_FUZZ_ACCOUNTS"]) as _f:
    _ACCOUNTS = json.load(_f)
# role -> the token this pass sends for it (kept current by after_call).
_TOKENS: dict[str, str] = dict(_ACCOUNTS["tokens"])
# The suite's own accounts: name -> role, and role -> name.
_OURS: dict[str, str] = dict(_ACCOUNTS["names"])
_OURS_BY_ROLE = {role: name for name, role in _OURS.items()}
_LOCK = threading.Lock()


def role_for(label: str) -> str | None:
    """The role whose token this pass sends to `label`, or None for no token."""
    if label not in ROLES:
        raise RuntimeError(
            f"{label} is not classified in tests/fuzz/roles.py: say which role it admits "
            "and which it refuses"
        )
    right, wrong = ROLES[label]
    return {"roles": right, "wrong-role": wrong, "anonymous": None}[PASS]


@schemathesis.hook
def before_load_schema(context, raw_schema):
    """The document's operations are exactly roles.py's: a new one must be classified (which
    role it admits, which it refuses) before it is fuzzed, and a stale entry is removed."""
    methods = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}
    served = {
        f"{method.upper()} {path}"
        for path, item in (raw_schema.get("paths") or {}).items()
        for method in item
        if method in methods
    }
    unclassified, stale = sorted(served - set(ROLES)), sorted(set(ROLES) - served)
    if unclassified or stale:
        raise RuntimeError(
            "tests/fuzz/roles.py does not match the document: "
            + "; ".join(
                part
                for part in (
                    unclassified and "not classified: " + ", ".join(unclassified),
                    stale and "not in the document: " + ", ".join(stale),
                )
                if part
            )
        )


def token(role: str) -> str:
    with _LOCK:
        return _TOKENS[role]


if PASS != "anonymous":

    @schemathesis.auth(refresh_interval=None, retry_on=[])
    class CivicBearer:
        """The bearer token of the operation's role in this pass (none for public operations)."""

        def get(self, case, context):
            role = role_for(context.operation.label)
            return None if role is None else token(role)

        def set(self, case, data, context):
            if data is not None:
                case.headers = dict(case.headers or {})
                case.headers["Authorization"] = f"Bearer {data}"


@schemathesis.hook
def after_call(context, case, response):
    """Keeps this pass's tokens working whatever the fuzzer does to them.

    - A 201 from POST /v1/token/rotate retires the rotator's token and shows the next.
    - A 201 from POST /v1/admin/accounts/{name}/token for one of the suite's own accounts (the
      fuzzer learns their names from the audit log, the roster and project members) retires
      that account's token and shows the next.
    - A 204 from DELETE /v1/admin/accounts/{name}/token for one of them leaves it without a
      token: a new one is issued at once by an administrator account still holding one.

    Without this, a lost token would turn every later request of its role into a 401, and
    after 60 of them the coordinator refuses the address (429) for a minute."""
    label, status = case.operation.label, response.status_code
    if label == "POST /v1/token/rotate" and status == 201:
        sent = (case.headers or {}).get("Authorization", "").removeprefix("Bearer ").strip()
        new = _json_field(response, "token")
        with _LOCK:
            if new and sent == _TOKENS["rotator"]:
                _TOKENS["rotator"] = new
                _save()
    elif label == "POST /v1/admin/accounts/{name}/token" and status == 201:
        name, new = _json_field(response, "name"), _json_field(response, "token")
        with _LOCK:
            if new and name in _OURS:
                _TOKENS[_OURS[name]] = new
                _save()
    elif label == "DELETE /v1/admin/accounts/{name}/token" and status == 204:
        name = urllib.parse.unquote(str((case.path_parameters or {}).get("name", "")))
        if name in _OURS:
            _reissue(name, response)


def _save() -> None:
    """Writes the current tokens back to the accounts file, for the next pass. Under _LOCK."""
    path = os.environ["CIVIC_FUZZ_ACCOUNTS"]
    with open(path + ".new", "w") as f:
        json.dump(dict(_ACCOUNTS, tokens=_TOKENS), f)
    os.replace(path + ".new", path)


def _json_field(response, field: str):
    try:
        value = response.json()[field]
    except (ValueError, KeyError, TypeError):
        return None  # response_schema_conformance reports the body
    return value if isinstance(value, str) else None


def _reissue(name: str, response) -> None:
    """A new token for our account `name`, issued by whichever of our administrators has one."""
    url = urllib.parse.urlsplit(response.request.url)
    base = f"{url.scheme}://{url.netloc}"
    with _LOCK:
        admins = [role for role in ("admin", "spare-admin") if _OURS_BY_ROLE[role] != name]
        for role in admins:
            r = requests.post(
                f"{base}/v1/admin/accounts/{urllib.parse.quote(name, safe='')}/token",
                headers={"Authorization": f"Bearer {_TOKENS[role]}"},
                timeout=30,
            )
            if r.status_code == 201:
                _TOKENS[_OURS[name]] = r.json()["token"]
                _save()
                return
    raise RuntimeError(f"fuzz: could not issue {name} a new token after the fuzzer revoked it")


def _header(response, name: str) -> str | None:
    for key, value in response.headers.items():
        if key.lower() == name.lower():
            return value[0] if isinstance(value, list) else value
    return None


@schemathesis.check
def problem_json(ctx, response, case):
    """Every error answer is RFC 9457 problem+json (README: "answers every error as RFC 9457
    application/problem+json with a stable code"): the media type, `status` equal to the HTTP
    status, `type` = urn:civic:problem:<code>, and Retry-After on 429 and 503."""
    status = response.status_code
    if status < 400:
        return None
    content_type = (_header(response, "content-type") or "").split(";")[0].strip()
    if content_type != "application/problem+json":
        raise AssertionError(f"{status} answered as {content_type or 'no Content-Type'}, not application/problem+json")
    try:
        body = json.loads(response.content)
    except ValueError as e:
        raise AssertionError(f"{status} problem body is not JSON: {e}") from None
    if not isinstance(body, dict):
        raise AssertionError(f"{status} problem body is not an object")
    if body.get("status") != status:
        raise AssertionError(f"problem body says status {body.get('status')!r}, HTTP says {status}")
    code = body.get("code")
    if not isinstance(code, str) or body.get("type") != f"urn:civic:problem:{code}":
        raise AssertionError(f"problem type {body.get('type')!r} does not name its code {code!r}")
    if status in (429, 503) and not _header(response, "retry-after"):
        raise AssertionError(f"{status} ({code}) without Retry-After")
    return None


@schemathesis.check
def fuzzer_tokens_alive(ctx, response, case):
    """A request this pass sent with one of its own tokens must not be refused as an unknown
    token: if it is, a fuzzed request revoked or reissued a token the suite depends on, and
    every later result of the pass is suspect."""
    if PASS == "anonymous" or response.status_code != 401:
        return None
    sent = (case.headers or {}).get("Authorization", "")
    if not sent.startswith("Bearer "):
        return None
    sent = sent.removeprefix("Bearer ").strip()
    with _LOCK:
        ours = {role: t for role, t in _TOKENS.items() if t == sent}
    if ours:
        raise AssertionError(f"the {', '.join(ours)} token was refused (401): the fuzzer lost it")
    return None


# Operations the `roles` pass cannot bring to success, and why. Every other operation must
# answer 2xx at least once in that pass (SuccessReached below), so the schemas of its success
# bodies are checked; a new operation must reach success or be listed here with its reason.
NO_SUCCESS = {
    "PUT /v1/manifests": "needs a manifest signed by the board's keys (civic-board sign); "
    "publishing one would also make every later approval need a signature",
    "POST /v1/partner/rounds/{id}/messages": "needs a bincode protocol message signed with "
    "the partner's round keys, which only a real agent in the round has",
}


@schemathesis.hook
def before_add_examples(context, examples):
    """Adds examples.py's known-good requests (and the partner's own identity key) to the
    examples phase."""
    operation = context.operation
    known_good = list(EXAMPLES.get(operation.label, []))
    if operation.label == "PUT /v1/partner/identity":
        # The key gp-north registered in seed.py: registering it again is accepted.
        known_good.append({"body": {"public_key": _ACCOUNTS["partners"]["gp-north"]["key"]}})
    for request in known_good:
        kwargs = {"path_parameters": request.get("path"), "query": request.get("query")}
        if "body" in request:
            kwargs.update(body=request["body"], media_type="application/json")
        case = operation.Case(**kwargs)
        # This pass's token, through the auth provider above, as generated cases get it.
        set_on_case(case, AuthContext(operation=operation, app=None), None)
        examples.append(case)


@schemathesis.check
class SuccessReached:
    """In the `roles` pass, every operation answers 2xx at least once (but NO_SUCCESS): the
    suite reaches each handler's success and checks its body, not only its refusals."""

    def __init__(self):
        self.tested: set[str] = set()
        self.reached: set[str] = set()

    def after_response(self, ctx, response, case):
        if case.method.upper() != case.operation.method.upper():
            return None  # unsupported_method's probes (TRACE, ...) are another operation's
        self.tested.add(case.operation.label)
        if 200 <= response.status_code < 300:
            self.reached.add(case.operation.label)
        return None

    def after_run(self, ctx):
        if PASS != "roles":
            return
        missing = sorted(self.tested - self.reached - set(NO_SUCCESS))
        if missing:
            raise AssertionError("never answered 2xx in the roles pass: " + ", ".join(missing))
        unexpected = sorted(set(NO_SUCCESS) & self.reached)
        if unexpected:
            raise AssertionError(
                "answered 2xx although hooks.py NO_SUCCESS says it cannot (update it): " + ", ".join(unexpected)
            )


@schemathesis.check
def refused_without_role(ctx, response, case):
    """In the `wrong-role` and `anonymous` passes no operation that needs a role answers 2xx."""
    if PASS == "roles" or not 200 <= response.status_code < 300:
        return None
    right, wrong = ROLES.get(case.operation.label, (None, None))
    if right is None or (PASS == "wrong-role" and wrong is None):
        return None  # public, or every role is admitted: nothing to refuse
    sent = "no token" if PASS == "anonymous" else f"a {wrong} token"
    raise AssertionError(f"{case.operation.label} answered {response.status_code} to {sent}")


def _request_key(label, path_parameters, query, body) -> str:
    return json.dumps([label, path_parameters or {}, query or {}, body], sort_keys=True, default=str)


_KNOWN_GOOD = {
    _request_key(label, r.get("path"), r.get("query"), r.get("body")) for label, rs in EXAMPLES.items() for r in rs
}


@schemathesis.check
def known_good_succeeds(ctx, response, case):
    """In the `roles` pass's examples phase, each of examples.py's requests answers 2xx: a
    refusal of one is a regression (or an example gone stale), named with its answer."""
    if PASS != "roles" or str(getattr(ctx, "phase", "")).lower() != "examples":
        return None
    body = case.body if isinstance(case.body, (dict, list, str, int, float, bool)) else None
    key = _request_key(case.operation.label, case.path_parameters, case.query, body)
    if key in _KNOWN_GOOD and not 200 <= response.status_code < 300:
        raise AssertionError(f"a known-good request (examples.py) was answered {response.status_code}")
    return None


# Operations whose requests' validity the document cannot state in JSON Schema: it depends on
# content (a policy's TOML, a signature, a bincode message) or on the store (a query's columns
# are the dataset policy's; project members must be existing researchers). For these
# schemathesis.toml lets positive_data_acceptance accept a 400, and this table says which
# problem codes such a 400 may carry: any other (request.json, request.invalid_name, a length,
# a range, an enum) is a constraint the document should declare, and is reported.
SEMANTIC_400: dict[str, set[str]] = {
    "PUT /v1/datasets/{id}": {"policy.parse", "policy.invalid", "policy.privacy", "dataset.id_mismatch"},
    "POST /v1/queries/preview": {
        "policy.query", "policy.privacy", "query.dataset_mismatch", "query.privacy", "query.below_floor",
        # Pure ε is refused where the dataset's policy has distributed noise: the policy's.
        "query.pure_epsilon_central_only", "mechanism.invalid_parameter",
    },
    "POST /v1/queries": {
        "policy.query", "policy.privacy", "query.dataset_mismatch", "query.privacy", "query.below_floor",
        # Pure ε is refused where the dataset's policy has distributed noise: the policy's.
        "query.pure_epsilon_central_only", "mechanism.invalid_parameter",
    },
    "POST /v1/projects": {"project.member_unknown", "project.member_role"},
    "POST /v1/queries/{id}/decision": {"decision.signature"},
    "PUT /v1/manifests": {"manifest.invalid", "manifest.not_successor"},
    "POST /v1/partner/rounds/{id}/messages": {"protocol.malformed", "protocol.wrong_round", "protocol.refused"},
    "PUT /v1/projects/{project}/allocations/{dataset}": {"policy.privacy"},
}


@schemathesis.check
def positive_refusal_is_semantic(ctx, response, case):
    """A schema-valid request to a SEMANTIC_400 operation refused with 400 names a reason the
    schema cannot express (see SEMANTIC_400)."""
    allowed = SEMANTIC_400.get(case.operation.label)
    meta = case.meta
    if allowed is None or response.status_code != 400 or meta is None or not meta.generation.mode.is_positive:
        return None
    if case.method.upper() != case.operation.method.upper():
        return None
    try:
        code = response.json().get("code")
    except (ValueError, AttributeError):
        code = None
    if code not in allowed:
        raise AssertionError(
            f"schema-valid request refused with 400 {code}: the document should declare the constraint "
            f"(400s the schema cannot express here: {', '.join(sorted(allowed))})"
        )
    return None
