"""The README's worked example runs as written, against the test federation."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pandas as pd

import civic

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", README.read_text(), re.S | re.M)


def test_readme_example_runs(federation, monkeypatch):
    monkeypatch.setenv("CIVIC_URL", federation.url)
    monkeypatch.setenv("CIVIC_TOKEN", federation.tokens["rita"])
    blocks = python_blocks()
    assert len(blocks) >= 5
    namespace: dict = {"__name__": "readme"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for i, block in enumerate(blocks):
            exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)
    printed = out.getvalue()
    # The example got a real release and showed the refusals' codes.
    assert namespace["q"].state == "released"
    frame = namespace["frame"]
    assert isinstance(frame, pd.DataFrame) and len(frame) == 8
    assert frame["value"].notna().all()
    assert isinstance(namespace["release"], civic.Release)
    assert "400 policy.query" in printed
    assert "over budget:" in printed
    assert federation.tokens["rita"] not in printed
