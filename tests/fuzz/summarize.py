"""Prints the distinct findings of Schemathesis runs from their NDJSON reports, deduplicated:
one line per (pass, operation, check, method sent, status received, problem code), with one
request that shows it and how many cases did. Server errors first.

Usage: summarize.py REPORT_DIR...   (each REPORT_DIR holds one pass's ndjson-*.ndjson; its
name is the pass's)
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path


def decode(content) -> str:
    if isinstance(content, dict) and "$base64" in content:
        raw = base64.b64decode(content["$base64"])
        try:
            return raw.decode()
        except UnicodeDecodeError:
            return repr(raw)
    return "" if content is None else str(content)


def problem_code(text: str) -> str:
    try:
        body = json.loads(text)
    except ValueError:
        return ""
    return body.get("code", "") if isinstance(body, dict) else ""


def short(value, limit: int = 160) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=True)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def findings(report_dir: Path):
    pass_name = report_dir.name
    for path in sorted(report_dir.glob("*.ndjson")):
        for line in path.open():
            event = json.loads(line)
            if "NonFatalError" in event:
                error = event["NonFatalError"]
                value = error.get("value") or {}
                message = f"{value.get('type', 'error')}: {value.get('message', json.dumps(error))}"
                yield (pass_name, error.get("label", "?"), "error", "", "", short(message, 300)), ""
                continue
            finished = event.get("EngineFinished")
            if finished:  # the run-wide checks (hooks.py's SuccessReached)
                for failure in finished.get("failures") or []:
                    key = (pass_name, "(the whole run)", f"{failure.get('code', '')} {failure.get('title', '')}", "", "", "")
                    yield key, short(failure.get("message", ""), 600)
                continue
            scenario = event.get("ScenarioFinished")
            if not scenario or not scenario.get("recorder", {}).get("checks"):
                continue
            recorder = scenario["recorder"]
            for case_id, checks in recorder["checks"].items():
                for check in checks:
                    if check.get("status") != "failure":
                        continue
                    failure = check["failure_info"]["failure"]
                    interaction = recorder.get("interactions", {}).get(case_id) or {}
                    request, response = interaction.get("request", {}), interaction.get("response") or {}
                    case = (recorder.get("cases", {}).get(case_id) or {}).get("value", {})
                    status = response.get("status_code", "")
                    body = decode(response.get("content"))
                    method = request.get("method") or case.get("method", "")
                    key = (
                        pass_name,
                        failure.get("operation", recorder.get("label", "?")),
                        f"{failure.get('code', '')} {failure.get('title', check['name'])}",
                        method,
                        str(status),
                        problem_code(body),
                    )
                    sent = f"{method} {request.get('uri', case.get('path', ''))}"
                    if "body" in case:
                        sent += f" body={short(case['body'], 200)}"
                    elif case.get("media_type"):
                        sent += f" (no body; {case['media_type']})"
                    message = " / ".join(x for x in (failure.get("message") or "").splitlines() if x.strip())
                    yield key, f"{sent}\n      → {status} {short(body, 240)}\n      {short(message, 300)}"


def main() -> int:
    seen: dict[tuple, tuple[str, int]] = {}
    for arg in sys.argv[1:]:
        for key, example in findings(Path(arg)):
            first, count = seen.get(key, (example, 0))
            seen[key] = (first, count + 1)

    def rank(key):
        pass_name, operation, check, method, status, code = key
        server_error = status.startswith("5") or check.startswith("ST101") or check.startswith("ST102")
        return (not server_error, check == "error", check, operation, method, status, code, pass_name)

    for key in sorted(seen, key=rank):
        pass_name, operation, check, method, status, code = key
        example, count = seen[key]
        if check == "error":  # Schemathesis could not test the operation: `code` is why
            print(f"[{pass_name}] {operation} | NOT TESTED | {code} (x{count})")
        else:
            print(f"[{pass_name}] {operation} | {check} | {status} {code} (x{count})\n    {example}")
    print(f"{len(seen)} distinct findings")
    return 0


if __name__ == "__main__":
    sys.exit(main())
