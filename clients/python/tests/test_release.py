"""Preview, submit, wait and read real releases from a coordinator with five partner agents."""

from __future__ import annotations

import itertools
import math

import pandas as pd
import pytest

import civic
from support import MEAN_BY_AGE, wait_released

# The policy's public bins and domains (examples/liverpool/diabetes.toml).
AGE_BINS = ["[18, 40)", "[40, 60)", "[60, 80)", "[80, 100]"]
SEXES = ["female", "male"]
BOOLEANS = ["false", "true"]
VALUE_COLUMNS = ["statistic", "value", "lower", "upper"]


def require_labels(release: civic.Release) -> None:
    if not release.labelled:
        pytest.skip(
            "this coordinator's release has no `keys`/`cell_keys` (cell labels not in the "
            "server yet): label assertions skipped"
        )


def check_values(frame: pd.DataFrame, *, nullable: bool = False) -> None:
    """Values present (unless suppressed cells are allowed), and inside their intervals."""
    if not nullable:
        assert frame["value"].notna().all(), frame
    stated = frame.dropna(subset=["value", "lower", "upper"])
    assert len(stated) > 0, frame
    assert (stated["lower"] <= stated["value"]).all(), stated
    assert (stated["value"] <= stated["upper"]).all(), stated


def test_preview_prices_without_spending(client):
    first = client.preview(MEAN_BY_AGE, {"rho": 0.05})
    assert isinstance(first, civic.Preview)
    assert first.dataset == "diabetes"
    assert first.rho == pytest.approx(0.05)
    assert first.affordable and first.refusal is None
    assert first.cells == len(AGE_BINS)
    assert first.approvals_required == 0
    assert first.blocks and len(first.half_widths) == len(first.blocks)
    assert all(w > 0 for w in first.half_widths)
    assert first.confidence == pytest.approx(0.95)
    # The mean's own accuracy, by the rows of its cell (not its sum's and count's).
    [mean] = first.accuracy
    assert mean["name"] == "mean(hba1c)" and mean["half_width"] is None
    assert mean["confidence"] == pytest.approx(0.9)
    widths = [hw for _, hw in mean["half_width_at_rows"]]
    assert widths == sorted(widths, reverse=True) and len(widths) >= 3
    second = client.preview(MEAN_BY_AGE, {"rho": 0.05}, confidence=0.99)
    assert second.confidence == pytest.approx(0.99)
    # A higher confidence gives wider intervals; neither preview spent anything.
    assert all(b > a for a, b in zip(first.half_widths, second.half_widths))
    assert second.remaining == first.remaining


def test_preview_of_an_unaffordable_query_says_why(client):
    preview = client.preview({"dataset": "diabetes", "statistic": "count"}, {"rho": 0.3})
    assert not preview.affordable
    assert "per-query cap" in preview.refusal


def test_submit_wait_result(client, federation, mean_by_age):
    q = mean_by_age
    assert isinstance(q, civic.Query) and q.released and q.done
    assert q.project == "diabetes-care" and q.dataset == "diabetes"
    assert q.cost["rho"] == pytest.approx(0.05)
    frame = client.result(q.id)
    assert list(frame.columns)[-4:] == VALUE_COLUMNS
    assert len(frame) == len(AGE_BINS)
    assert (frame["statistic"] == "mean(hba1c)").all()
    check_values(frame)
    # Means are clamped to the column's public bounds.
    assert frame["value"].between(20, 150).all()
    # The release id and receipt travel with the frame, and on the Release.
    release = client.release(q.id)
    assert frame.attrs["release_id"] == release.release_id == q.release.release_id
    assert frame.attrs["query_id"] == q.id
    assert frame.attrs["receipt"] == release.receipt
    assert release.receipt["rho"] == pytest.approx(0.05)
    assert release.receipt["survivors"] >= 4
    assert release.names == ["mean(hba1c)"]


def test_result_labels_cells(client, mean_by_age):
    release = client.release(mean_by_age)
    require_labels(release)
    assert release.keys == ["age"]
    frame = client.result(mean_by_age)
    assert list(frame.columns) == ["age", *VALUE_COLUMNS]
    assert [str(a) for a in frame["age"]] == AGE_BINS
    # Bins are ordered categories: they sort as bins, not as text.
    assert list(frame["age"].cat.categories) == AGE_BINS
    assert frame["age"].cat.ordered
    assert list(frame.sort_values("age")["age"].astype(str)) == AGE_BINS


def test_result_without_labels_indexes_cells(client, mean_by_age):
    release = client.release(mean_by_age)
    if release.labelled:
        pytest.skip("this coordinator labels cells; the fallback is covered by test_frames.py")
    frame = client.result(mean_by_age)
    assert list(frame.columns) == ["cell", *VALUE_COLUMNS]
    assert list(frame["cell"]) == list(range(len(AGE_BINS)))


def test_wide_result(client, mean_by_age):
    wide = client.result(mean_by_age, wide=True)
    assert len(wide) == len(AGE_BINS)
    assert list(wide.columns)[-3:] == ["mean(hba1c)", "mean(hba1c)_lower", "mean(hba1c)_upper"]
    long = client.result(mean_by_age)
    assert list(wide["mean(hba1c)"]) == list(long["value"])
    if client.release(mean_by_age).labelled:
        assert [str(a) for a in wide["age"]] == AGE_BINS


def test_grouped_histogram(client, federation):
    histogram = {
        "dataset": "diabetes",
        "statistic": {"histogram": {"columns": ["has_diabetes"]}},
        "group_by": ["sex"],
    }
    q = wait_released(client, federation, client.submit(histogram, {"rho": 0.05}))
    frame = client.result(q)
    assert len(frame) == len(SEXES) * len(BOOLEANS)
    assert (frame["statistic"] == "count").all()
    check_values(frame, nullable=True)
    # NHS disclosure control: counts are redacted (NaN) or multiples of 5.
    shown = frame["value"].dropna()
    assert (shown >= 0).all() and all(v % 5 == 0 for v in shown)
    release = client.release(q)
    require_labels(release)
    # The group-by columns, then the histogram's; the last varies fastest.
    assert release.keys == ["sex", "has_diabetes"]
    assert list(frame.columns) == ["sex", "has_diabetes", *VALUE_COLUMNS]
    cells = [(str(s), str(d)) for s, d in zip(frame["sex"], frame["has_diabetes"])]
    assert cells == list(itertools.product(SEXES, BOOLEANS))
    wide = client.result(q, wide=True)
    assert list(wide.columns) == ["sex", "has_diabetes", "count", "count_lower", "count_upper"]
    # Pivoting the long frame works on the labels.
    table = frame.pivot(index="sex", columns="has_diabetes", values="value")
    assert table.shape == (2, 2)


def test_ungrouped_count_and_free_reuse(client, federation):
    count = {"dataset": "diabetes", "statistic": "count"}
    first = wait_released(client, federation, client.submit(count, {"rho": 0.05}))
    frame = client.result(first)
    assert len(frame) == 1 and frame["statistic"].iloc[0] == "count"
    check_values(frame)
    if first.release.labelled:
        assert first.release.keys == []
        assert list(frame.columns) == VALUE_COLUMNS
    # The identical question is answered at once from the store, at no cost.
    again = client.submit(count, {"rho": 0.05})
    assert again.state == "released"
    assert again.release.reused
    assert again.release.release_id == first.release.release_id
    assert math.isclose(again.cost["rho"], 0.0, abs_tol=1e-12)
    assert client.result(again)["value"].iloc[0] == frame["value"].iloc[0]
