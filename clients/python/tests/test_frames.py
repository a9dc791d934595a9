"""DataFrames from release bodies in the coordinator's wire format, without a server.

The live tests (test_release.py) read whatever the coordinator sends; these pin the shapes
a live coordinator may not send: a release from an older coordinator without cell labels,
suppressed cells, several statistics, labels that do not fit.
"""

from __future__ import annotations

import math

import pytest

import civic


def release(**fields):
    body = {
        "release_id": 7,
        "released_at": "2026-01-01T00:00:00Z",
        "reused": False,
        "names": ["count"],
        "rows": [[{"value": 10.0, "interval": [5.0, 15.0]}, {"value": None, "interval": None}]],
        "receipt": {"rho": 0.05},
    }
    body.update(fields)
    return civic.Release.from_json(body, query_id=3)


def test_older_coordinator_without_labels_gets_a_cell_index():
    r = release()
    assert not r.labelled and r.keys is None
    frame = r.to_frame()
    assert list(frame.columns) == ["cell", "statistic", "value", "lower", "upper"]
    assert list(frame["cell"]) == [0, 1]
    assert frame["value"].iloc[0] == 10.0 and math.isnan(frame["value"].iloc[1])
    assert math.isnan(frame["lower"].iloc[1]) and math.isnan(frame["upper"].iloc[1])
    assert frame.attrs["release_id"] == 7 and frame.attrs["query_id"] == 3
    assert frame.attrs["keys"] is None and frame.attrs["receipt"] == {"rho": 0.05}
    wide = r.to_frame(wide=True)
    assert list(wide.columns) == ["cell", "count", "count_lower", "count_upper"]


def test_several_statistics_long_and_wide():
    r = release(
        names=["count", "mean(hba1c)"],
        rows=[
            [{"value": 100.0, "interval": [90.0, 110.0]}, {"value": 50.0, "interval": [45.0, 55.0]}],
            [{"value": 60.0, "interval": [58.0, 62.0]}, {"value": 61.0, "interval": None}],
        ],
        keys=["sex"],
        cell_keys=[["female"], ["male"]],
    )
    long = r.to_frame()
    assert list(long.columns) == ["sex", "statistic", "value", "lower", "upper"]
    assert list(long["statistic"]) == ["count", "count", "mean(hba1c)", "mean(hba1c)"]
    assert [str(s) for s in long["sex"]] == ["female", "male", "female", "male"]
    wide = r.to_frame(wide=True)
    assert list(wide.columns) == [
        "sex", "count", "count_lower", "count_upper",
        "mean(hba1c)", "mean(hba1c)_lower", "mean(hba1c)_upper",
    ]
    assert list(wide["mean(hba1c)"]) == [60.0, 61.0]
    assert math.isnan(wide["mean(hba1c)_lower"].iloc[1])


def test_ungrouped_statistic_has_no_key_columns():
    r = release(rows=[[{"value": 5.0, "interval": [1.0, 9.0]}]], keys=[], cell_keys=[[]])
    assert r.labelled
    assert list(r.to_frame().columns) == ["statistic", "value", "lower", "upper"]
    assert list(r.to_frame(wide=True).columns) == ["count", "count_lower", "count_upper"]


def test_labels_that_do_not_fit_fall_back_with_a_warning():
    r = release(keys=["sex"], cell_keys=[["female"]])  # two cells, one label
    with pytest.warns(UserWarning, match="indexing cells by number"):
        frame = r.to_frame()
    assert list(frame["cell"]) == [0, 1]
