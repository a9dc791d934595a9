"""What the coordinator answers, as Python objects: :class:`Preview`, :class:`Query` and
:class:`Release` (whose :meth:`Release.to_frame` builds the pandas DataFrame).

Each keeps the coordinator's JSON as ``raw`` (a ``dict``), so a field a newer coordinator
adds is never lost.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

__all__ = ["Preview", "Query", "Release", "TERMINAL_STATES", "STATES"]

#: Every state of a query, as the coordinator names them (``QueryState`` in the API).
STATES = ("awaiting_approval", "running", "released", "aborted", "rejected")
#: The states a query never leaves.
TERMINAL_STATES = frozenset({"released", "aborted", "rejected"})

#: The columns of the long frame after the key columns.
VALUE_COLUMNS = ["statistic", "value", "lower", "upper"]


def _float(x: Any) -> float:
    return float("nan") if x is None else float(x)


@dataclass(frozen=True)
class Preview:
    """What a submission would cost and how accurate it would be (nothing is spent).

    ``cost`` is a dict (``rho``, ``epsilon``, ``approx_dp``), ``remaining`` a dict
    (``dataset_rho``, ``project_rho``, ``per_query_rho``). ``accuracy`` has one dict per
    row the release will name (``name``, ``half_width``, ``half_width_at_rows`` for a mean,
    ``confidence``, ``note``): the accuracy of the statistic asked for. ``half_widths[i]`` is
    the confidence-interval half-width of every cell of ``blocks[i]`` (``"count"``,
    ``"sum(hba1c)"``, ...), at ``confidence``. ``notes`` says what else a submission would
    meet (a training job's rounds against the partners' rounds a day).
    """

    dataset: str
    dataset_version: int | None
    cells: int | None
    blocks: list[str]
    cost: dict[str, Any]
    confidence: float | None
    half_widths: list[float]
    accuracy: list[dict[str, Any]]
    remaining: dict[str, Any]
    affordable: bool
    refusal: str | None
    approvals_required: int
    reuses_release: int | None
    notes: list[str]
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Preview":
        return cls(
            dataset=d.get("dataset", ""),
            dataset_version=d.get("dataset_version"),
            cells=d.get("cells"),
            blocks=list(d.get("blocks") or []),
            cost=dict(d.get("cost") or {}),
            confidence=d.get("confidence"),
            half_widths=list(d.get("half_widths") or []),
            accuracy=list(d.get("accuracy") or []),
            remaining=dict(d.get("remaining") or {}),
            affordable=bool(d.get("affordable")),
            refusal=d.get("refusal"),
            approvals_required=int(d.get("approvals_required") or 0),
            reuses_release=d.get("reuses_release"),
            notes=list(d.get("notes") or []),
            raw=d,
        )

    @property
    def rho(self) -> float | None:
        """The cost in zCDP ρ, as the ledger charges it."""
        return self.cost.get("rho")


@dataclass(frozen=True)
class Release:
    """A released result: values, intervals, labels and the privacy receipt.

    ``names`` says what each row is (``"count"``, ``"mean(hba1c)"``); ``rows[i][j]`` is the
    cell ``{"value": ..., "interval": [lower, upper] | None}`` of name ``i`` at cell
    position ``j``. ``keys`` are the columns that index the cells (``None`` from a
    coordinator that does not label them) and ``cell_keys[j]`` their values at position
    ``j``. ``receipt`` is the privacy receipt (a dict: mechanism, ε/ρ, bounds, disclosure
    rules, surviving partners, caveats).
    """

    release_id: int
    released_at: str | None
    reused: bool
    names: list[str]
    rows: list[list[dict[str, Any]]] = field(repr=False)
    keys: list[str] | None
    cell_keys: list[list[str]] | None = field(repr=False)
    receipt: dict[str, Any] = field(repr=False)
    query_id: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: dict[str, Any], query_id: int | None = None) -> "Release":
        has_keys = "keys" in d
        return cls(
            release_id=d["release_id"],
            released_at=d.get("released_at"),
            reused=bool(d.get("reused")),
            names=list(d.get("names") or []),
            rows=[list(r) for r in d.get("rows") or []],
            keys=list(d.get("keys") or []) if has_keys else None,
            cell_keys=[list(c) for c in d.get("cell_keys") or []] if has_keys else None,
            receipt=d.get("receipt") or {},
            query_id=query_id,
            raw=d,
        )

    @property
    def labelled(self) -> bool:
        """Whether the coordinator labelled the cells (sent ``keys`` and ``cell_keys``)."""
        return self.keys is not None

    def _labels(self) -> tuple[list[str], list[list[str]]] | None:
        """The key columns and each cell's labels, or None to index cells by number."""
        if self.keys is None or self.cell_keys is None:
            return None
        widths = {len(r) for r in self.rows}
        cells = self.cell_keys
        if not self.keys and not cells and len(widths) == 1:
            cells = [[]] * widths.pop()  # an ungrouped statistic sent without its empty label
        if widths - {len(cells)} or any(len(c) != len(self.keys) for c in cells):
            warnings.warn(
                f"release {self.release_id}: {len(cells)} cell labels over keys {self.keys} "
                f"do not fit rows of {sorted(widths)} cells; indexing cells by number instead",
                stacklevel=3,
            )
            return None
        return self.keys, cells

    def to_frame(self, wide: bool = False) -> pd.DataFrame:
        """The release as a DataFrame.

        Long (the default, tidy): one row per (statistic, cell), with the key columns (the
        query's ``group_by`` columns, then a histogram's columns), then ``statistic``,
        ``value``, ``lower`` and ``upper``. A value suppressed by disclosure control, or an
        interval not stated, is NaN. Key columns are ordered categoricals in the policy's
        order (bins sort as bins, not as text). Without labels from the coordinator (an
        older one), an integer ``cell`` column stands for the keys.

        Wide (``wide=True``): one row per cell: the key columns, then for each statistic
        its value (a column named as the statistic), ``<statistic>_lower`` and
        ``<statistic>_upper``.

        ``frame.attrs`` holds ``release_id``, ``query_id``, ``released_at``, ``reused``,
        ``keys`` and ``receipt`` (pandas may drop ``attrs`` through some operations; the
        :class:`Release` keeps them all).
        """
        labels = self._labels()
        width = max((len(r) for r in self.rows), default=0)
        if labels is None:
            key_names = ["cell"]
            cell_index: list[tuple[Any, ...]] = [(j,) for j in range(width)]
            categories: dict[str, list[str]] = {}
        else:
            key_names, cells = labels
            cell_index = [tuple(c) for c in cells]
            categories = {
                k: _first_seen(c[i] for c in cells) for i, k in enumerate(key_names)
            }
        if wide:
            data: dict[str, list[Any]] = {
                k: [c[i] for c in cell_index] for i, k in enumerate(key_names)
            }
            for name, row in zip(self.names, self.rows):
                values, lower, upper = _unzip(row, width)
                data[name] = values
                data[f"{name}_lower"] = lower
                data[f"{name}_upper"] = upper
            frame = pd.DataFrame(data, index=range(width))
        else:
            data = {k: [] for k in [*key_names, *VALUE_COLUMNS]}
            for name, row in zip(self.names, self.rows):
                values, lower, upper = _unzip(row, width)
                for i, k in enumerate(key_names):
                    data[k].extend(c[i] for c in cell_index)
                data["statistic"].extend([name] * width)
                data["value"].extend(values)
                data["lower"].extend(lower)
                data["upper"].extend(upper)
            frame = pd.DataFrame(data)
            for k in ("value", "lower", "upper"):
                frame[k] = frame[k].astype(float)
        if labels is None:
            frame["cell"] = frame["cell"].astype(int)
        for k, cats in categories.items():
            frame[k] = pd.Categorical(frame[k], categories=cats, ordered=True)
        frame.attrs.update(
            release_id=self.release_id,
            query_id=self.query_id,
            released_at=self.released_at,
            reused=self.reused,
            keys=list(self.keys) if self.keys is not None else None,
            receipt=self.receipt,
        )
        return frame


def _first_seen(values) -> list[str]:
    seen: dict[str, None] = {}
    for v in values:
        seen.setdefault(v, None)
    return list(seen)


def _unzip(
    row: list[dict[str, Any]], width: int
) -> tuple[list[float], list[float], list[float]]:
    """A row's values, lower and upper bounds, padded with NaN to ``width`` cells."""
    values, lower, upper = [], [], []
    for cell in [*row, *[None] * (width - len(row))]:
        cell = cell or {}
        values.append(_float(cell.get("value")))
        interval = cell.get("interval")
        if interval is None:
            lower.append(float("nan"))
            upper.append(float("nan"))
        else:
            lower.append(_float(interval[0]))
            upper.append(_float(interval[1]))
    return values, lower, upper


@dataclass(frozen=True)
class Query:
    """A submitted query as the coordinator sees it now.

    ``state`` is one of :data:`STATES`; ``reason`` says why it was aborted or rejected;
    ``release`` is its :class:`Release` once released (else ``None``). ``cost`` is a dict
    (``rho``, ``epsilon``, ``approx_dp``; 0 when re-served from an identical release).
    ``training`` is a training job's progress (``iterations``, ``finished``, ``names``,
    ``latest_announced``: the iterate the partners were last sent, charged whatever the job's
    end), else ``None``.
    """

    id: int
    state: str
    project: str
    dataset: str
    dataset_version: int | None
    fingerprint: str | None
    submitted_by: str | None
    submitted_at: str | None
    reason: str | None
    cost: dict[str, Any]
    approvals_required: int
    approvals: list[dict[str, Any]]
    round_id: int | None
    release: Release | None
    training: dict[str, Any] | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Query":
        result = d.get("result")
        return cls(
            id=d["id"],
            state=d["state"],
            project=d.get("project", ""),
            dataset=d.get("dataset", ""),
            dataset_version=d.get("dataset_version"),
            fingerprint=d.get("fingerprint"),
            submitted_by=d.get("submitted_by"),
            submitted_at=d.get("submitted_at"),
            reason=d.get("reason"),
            cost=dict(d.get("cost") or {}),
            approvals_required=int(d.get("approvals_required") or 0),
            approvals=list(d.get("approvals") or []),
            round_id=d.get("round_id"),
            release=Release.from_json(result, query_id=d["id"]) if result else None,
            training=d.get("training"),
            raw=d,
        )

    @property
    def done(self) -> bool:
        """Whether the query is in a terminal state (released, aborted or rejected)."""
        return self.state in TERMINAL_STATES

    @property
    def released(self) -> bool:
        return self.state == "released"
