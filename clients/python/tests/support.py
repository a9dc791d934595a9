"""What several test modules share."""

from __future__ import annotations

import pytest

import civic
from federation import PARTNERS

#: The question most tests read: mean HbA1c of people with diabetes, by age band.
MEAN_BY_AGE = {
    "dataset": "diabetes",
    "statistic": {"mean": {"column": "hba1c"}},
    "group_by": ["age"],
    "filter": {"compare": {"column": "has_diabetes", "op": "eq", "value": True}},
}


def wait_released(client, federation, query, timeout=60.0):
    """Waits for a query and checks it was released (failing with the logs' tails if not)."""
    try:
        done = client.wait(query, timeout=timeout, poll=0.2)
    except civic.WaitTimeout:
        logs = "\n".join(
            f"--- {name}:\n{federation.log(name)[-2000:]}"
            for name in ["coordinator", *PARTNERS]
        )
        pytest.fail(f"no release in {timeout} s\n{logs}")
    assert done.state == "released", f"query {done.id} was {done.state}: {done.reason}"
    return done
