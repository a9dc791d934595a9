"""Known-good requests, added to Schemathesis's examples phase by hooks.py (in every pass).

Generated values rarely get past a handler's validation into what it does on success (a
random body is almost never a query the dataset's policy can price, nor a policy that
parses), so without these the success answers of several operations, and the schemas of
their bodies, would go unchecked. Each is what docs/walkthrough.md or docs/queries.md sends,
against what seed.py created (dataset `diabetes`, project `diabetes-care`, queries 1 and 2
running in rounds 1 and 2, query 3 awaiting approval). In the `roles` pass they bring every
operation but hooks.py's NO_SUCCESS to a 2xx (the SuccessReached check); in the other two passes
they must be refused (refused_without_role).
"""

from pathlib import Path

POLICY = (Path(__file__).resolve().parents[2] / "examples" / "policies" / "diabetes.toml").read_text()

HAS_DIABETES = {"compare": {"column": "has_diabetes", "op": "eq", "value": True}}


def query(statistic, privacy, **extra):
    return {
        "project": "diabetes-care",
        "query": {"dataset": "diabetes", "statistic": statistic, **extra},
        "privacy": privacy,
    }


# Per operation (as roles.py names it): a list of requests, each {path, query, body}.
EXAMPLES: dict[str, list[dict]] = {
    "POST /v1/queries/preview": [
        {"body": query("count", {"rho": 0.01}, filter=HAS_DIABETES, group_by=["deprivation_decile"])},
        {"body": query({"sum": {"column": "hba1c"}}, {"rho": 0.05})},
        {"body": query({"mean": {"column": "hba1c"}}, {"rho": 0.02}, filter=HAS_DIABETES, group_by=["age"])},
        {
            "body": query(
                {"histogram": {"columns": ["age"]}},
                {"target_half_width": {"half_width": 20, "mechanism": "gaussian"}},
                filter=HAS_DIABETES,
            )
        },
        {"body": query({"quantiles": {"column": "age", "probabilities": [0.25, 0.5, 0.75]}}, {"rho": 0.02})},
        {
            "body": query(
                {"linear_regression": {"features": ["age"], "target": "hba1c"}}, {"rho": 0.1}, filter=HAS_DIABETES
            )
        },
        {"body": dict(query("count", {"rho": 0.01}), confidence=0.9)},
    ],
    "POST /v1/queries": [
        {"body": query("count", {"rho": 0.01}, filter={"compare": {"column": "copd", "op": "eq", "value": True}})},
    ],
    "POST /v1/queries/{id}/decision": [
        {"path": {"id": 3}, "body": {"approve": True, "reason": "proportionate"}},
    ],
    "PUT /v1/projects/{project}/allocations/{dataset}": [
        {"path": {"project": "diabetes-care", "dataset": "diabetes"}, "body": {"cap": {"rho": 0.5}}},
    ],
    "PUT /v1/datasets/{id}": [
        {"path": {"id": "diabetes"}, "body": {"policy": POLICY}},
        {"path": {"id": "diabetes"}, "body": {"policy": POLICY, "format": "toml"}},
    ],
    "POST /v1/projects": [
        {"body": {"id": "fuzz-example", "title": "An example project", "members": ["fuzz-researcher"]}},
    ],
    "POST /v1/admin/accounts": [
        {"body": {"name": "fuzz-example", "role": "researcher"}},
    ],
    "POST /v1/admin/partners": [
        {"body": {"name": "gp-example"}},
    ],
    "POST /v1/partner/rounds/{id}/decline": [
        {"path": {"id": 2}, "body": {"reason": "data.unavailable: the extract is being reloaded"}},
    ],
    "GET /v1/partner/rounds/{id}/inbox": [
        {"path": {"id": 1}},
    ],
    "GET /v1/audit": [
        {"query": {"after": 0, "limit": 1000}},
    ],
    "GET /v1/register": [
        {"query": {"limit": 100}},
    ],
}
