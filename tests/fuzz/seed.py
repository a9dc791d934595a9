"""Gives a fresh coordinator something real for the fuzzer to act on.

Run by run.sh after the coordinator answers /healthz, with the tokens the `admin
create-account` commands printed. Through the API, as docs/walkthrough.md does: the governance
member uploads examples/policies/diabetes.toml, creates the project `diabetes-care` (member:
the researcher) and allocates it the dataset's whole budget; every partner registers its identity
key; the researcher submits two queries that run (each opens a round; no agent answers, and the
phase deadline outlasts the run) and one above the approval threshold (it waits for the board).

The identifiers it creates are fixed (a fresh store numbers queries and rounds from 1), and
schemathesis.toml (its dictionaries) and examples.py name them; this script fails if any differs, so the
dictionaries never silently point at nothing.

Usage: seed.py BASE_URL ACCOUNTS_JSON POLICY_TOML (ACCOUNTS_JSON: what run.sh wrote)
"""

import json
import sys
import time

import requests

# What schemathesis.toml's dictionaries name.
DATASET = "diabetes"
PROJECT = "diabetes-care"
RUNNING_QUERIES = (1, 2)
AWAITING_QUERY = 3
ROUNDS = (1, 2)

QUERY = {
    "project": PROJECT,
    "query": {
        "dataset": DATASET,
        "statistic": {"mean": {"column": "hba1c"}},
        "group_by": ["age"],
        "filter": {"compare": {"column": "has_diabetes", "op": "eq", "value": True}},
    },
    "privacy": {"rho": 0.01},
}


def main() -> None:
    base, accounts_path, policy_path = sys.argv[1:4]
    with open(accounts_path) as f:
        accounts = json.load(f)
    session = requests.Session()

    def call(method: str, path: str, role: str, body=None):
        """`role` names an account in the accounts file, or is a partner's token."""
        bearer = accounts["tokens"].get(role, role)
        r = session.request(
            method, base + path, json=body, headers={"Authorization": f"Bearer {bearer}"}, timeout=30
        )
        if r.status_code not in (200, 201, 204):
            who = role if role in accounts["tokens"] else "a partner"
            sys.exit(f"seed: {method} {path} as {who}: {r.status_code} {r.text}")
        return r.json() if r.content else None

    with open(policy_path) as f:
        policy = f.read()
    view = call("PUT", f"/v1/datasets/{DATASET}", "governance", {"policy": policy})
    assert view["version"] == 1, view
    call(
        "POST",
        "/v1/projects",
        "governance",
        {"id": PROJECT, "title": "Fuzzing the coordinator's API", "members": ["fuzz-researcher"]},
    )
    call("PUT", f"/v1/projects/{PROJECT}/allocations/{DATASET}", "governance", {"cap": {"rho": 0.5}})
    # Every partner of the policy registers its identity key (civic-agent keygen's): no round
    # starts without all of them.
    for name, partner in accounts["partners"].items():
        call("PUT", "/v1/partner/identity", partner["token"], {"public_key": partner["key"]})

    # Two running queries (two questions: an identical one would be refused while the first
    # is in flight), each opening a round, and one above the approval threshold.
    running = [
        call("POST", "/v1/queries", "researcher", QUERY),
        call("POST", "/v1/queries", "researcher", dict(QUERY, query=dict(QUERY["query"], group_by=["sex"]))),
    ]
    big = dict(QUERY, privacy={"rho": 0.06}, query=dict(QUERY["query"], group_by=["deprivation_decile"]))
    awaiting = call("POST", "/v1/queries", "researcher", big)
    ids = tuple(q["id"] for q in running) + (awaiting["id"],)
    if ids != RUNNING_QUERIES + (AWAITING_QUERY,):
        sys.exit(f"seed: queries got ids {ids}; schemathesis.toml and examples.py name {RUNNING_QUERIES + (AWAITING_QUERY,)}")
    if awaiting["state"] != "awaiting_approval":
        sys.exit(f"seed: query {AWAITING_QUERY} is {awaiting['state']}, not awaiting_approval")

    # Each running query's round opens in a tick of the round driver.
    rounds = ()
    for _ in range(100):
        views = [call("GET", f"/v1/queries/{q}", "researcher") for q in RUNNING_QUERIES]
        rounds = tuple(v.get("round_id") for v in views)
        if None not in rounds:
            break
        time.sleep(0.1)
    if rounds != ROUNDS:
        sys.exit(f"seed: queries {RUNNING_QUERIES} are in rounds {rounds}; expected {ROUNDS}")
    announced = call("GET", "/v1/partner/rounds", "partner")["rounds"]
    print(
        f"seed: dataset {DATASET} v1; project {PROJECT}; queries {RUNNING_QUERIES} running in rounds {ROUNDS} "
        f"({len(announced)} announced to gp-north); query {AWAITING_QUERY} awaiting approval"
    )


if __name__ == "__main__":
    main()
