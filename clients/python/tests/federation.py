"""A local Civic federation for the tests (and for trying the client by hand).

It does what ``docs/walkthrough.md`` does, with the real binaries: a coordinator on SQLite
in a temporary directory, a board of three keys, the ``diabetes`` dataset with its policy
from ``examples/liverpool/diabetes.toml``, a project ``diabetes-care`` with researcher
``rita``, five GP federations' agents on synthetic extracts, and the board's signed
manifest. The binaries come from ``CIVIC_BIN_DIR`` (default ``<repo>/target/debug``).

Run by hand, it starts a federation and prints the environment to point the client at it:

    python3 clients/python/tests/federation.py

and stops everything on Ctrl-C.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[3]
BINARIES = ("civic-coordinator", "civic-agent", "civic-board")
PARTNERS = ("gp-north", "gp-central", "gp-south", "gp-east", "gp-west")
BOARD = ("chair", "member", "resident")
DATASET = "diabetes"
PROJECT = "diabetes-care"
POLICY = REPO / "examples" / "liverpool" / "diabetes.toml"


def bin_dir() -> Path:
    """Where the binaries are: ``CIVIC_BIN_DIR``, or ``<repo>/target/debug``."""
    return Path(os.environ.get("CIVIC_BIN_DIR") or REPO / "target" / "debug").resolve()


def missing_binaries(directory: Path) -> list[str]:
    return [b for b in BINARIES if not os.access(directory / b, os.X_OK)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FederationError(RuntimeError):
    pass


class Federation:
    """Start with :meth:`start`, stop with :meth:`stop` (or use as a context manager).

    After start: ``url``; tokens ``admin``, ``chair``, ``member`` (governance), ``rita``
    (researcher in ``diabetes-care``), ``otto`` (a researcher in no project).
    """

    def __init__(
        self,
        workdir: Path | None = None,
        bins: Path | None = None,
        residents: int = 20000,
        agents: bool = True,
        poll_seconds: float = 0.25,
        phase_deadline_secs: float = 15,
    ) -> None:
        self.bins = bins or bin_dir()
        missing = missing_binaries(self.bins)
        if missing:
            raise FederationError(
                f"{', '.join(missing)} not found in {self.bins}: build them with "
                "`cargo build -p civic-server -p civic-client-sdk --bins` or set CIVIC_BIN_DIR"
            )
        self._own_dir = workdir is None
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="civic-py-"))
        self.residents = residents
        self.with_agents = agents
        self.poll_seconds = poll_seconds
        self.phase_deadline_secs = phase_deadline_secs
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tokens: dict[str, str] = {}
        self._procs: list[tuple[str, subprocess.Popen]] = []
        self._logs: list = []

    # -- helpers ----------------------------------------------------------------------------

    def _run(self, *args: str, cwd: Path | None = None) -> str:
        exe = str(self.bins / args[0])
        done = subprocess.run(
            [exe, *args[1:]], cwd=cwd or self.dir, capture_output=True, text=True, timeout=60
        )
        if done.returncode != 0:
            raise FederationError(
                f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
            )
        return done.stdout

    def _spawn(self, name: str, *args: str, cwd: Path) -> subprocess.Popen:
        log = open(cwd / f"{name}.log", "wb")
        self._logs.append(log)
        proc = subprocess.Popen(
            [str(self.bins / args[0]), *args[1:]],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self._procs.append((name, proc))
        return proc

    def _call(self, method: str, path: str, token: str, body=None) -> dict:
        r = requests.request(
            method,
            self.url + path,
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        if r.status_code >= 400:
            raise FederationError(f"{method} {path}: {r.status_code} {r.text}")
        return r.json() if r.content else {}

    def log(self, name: str) -> str:
        """A process's log (``coordinator``, or a partner's name)."""
        path = self.dir / ("coordinator.log" if name == "coordinator" else f"{name}/agent.log")
        return path.read_text(errors="replace") if path.exists() else ""

    # -- the walk-through -------------------------------------------------------------------

    def start(self) -> "Federation":
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        d = self.dir
        (d / "coordinator.toml").write_text(
            f'bind = "127.0.0.1:{self.port}"\n'
            'store_url = "sqlite://civic.db"\n'
            f"phase_deadline_secs = {self.phase_deadline_secs}\n"
            "max_rows_per_partner = 1000000\n"
            "request_timeout_secs = 10\n"
        )
        out = self._run(
            "civic-coordinator", "--config", "coordinator.toml", "admin", "create-account",
            "root", "--role", "admin",
        )
        match = re.search(r"^token[^:]*: (\S+)", out, re.M)
        if not match:
            raise FederationError(f"no token in create-account's output: {out!r}")
        admin = self.tokens["admin"] = match.group(1)
        coordinator = self._spawn(
            "coordinator", "civic-coordinator", "--config", "coordinator.toml", "serve", cwd=d
        )
        self._await(lambda: self._healthy(), 30, "the coordinator to answer /healthz", coordinator)

        for name, role in [
            ("chair", "governance"),
            ("member", "governance"),
            ("rita", "researcher"),
            ("otto", "researcher"),
        ]:
            self.tokens[name] = self._call(
                "POST", "/v1/admin/accounts", admin, {"name": name, "role": role}
            )["token"]
        for p in PARTNERS:
            (d / p).mkdir()
            token = self._call("POST", "/v1/admin/partners", admin, {"name": p})["token"]
            (d / p / "token").write_text(token + "\n")
            os.chmod(d / p / "token", 0o600)

        board_keys = {}
        for m in BOARD:
            board_keys[m] = self._run("civic-board", "keygen", "--out", f"{m}.key").strip()

        chair = self.tokens["chair"]
        self._call("PUT", f"/v1/datasets/{DATASET}", chair, {"policy": POLICY.read_text()})
        self._call(
            "POST",
            "/v1/projects",
            chair,
            {"id": PROJECT, "title": "Catching diabetes complications early", "members": ["rita"]},
        )
        self._call(
            "PUT", f"/v1/projects/{PROJECT}/allocations/{DATASET}", chair, {"cap": {"rho": 0.5}}
        )

        identities = {}
        for p in PARTNERS:
            pd_ = d / p
            self._run(
                "civic-agent", "synth", "--partner", p, "--residents", str(self.residents),
                "--out", "extract.csv", cwd=pd_,
            )
            out = self._run("civic-agent", "keygen", "--out", "identity.key", cwd=pd_)
            match = re.search(r"^public key.*: (\S+)", out, re.M)
            if not match:
                raise FederationError(f"no public key in keygen's output: {out!r}")
            identities[p] = match.group(1)
            keys = ", ".join(f'"{board_keys[m]}"' for m in BOARD)
            (pd_ / "partner.toml").write_text(
                f"""identity_key = "identity.key"
state_dir = "state"

[board]
threshold = 2
keys = [{keys}]

[coordinator]
url = "{self.url}"
token_file = "token"
poll_seconds = {self.poll_seconds}
max_backoff_seconds = 2.0

[limits]
max_rho_per_query = 0.2
total_rho = 1.0
allowed_statistics = ["count", "histogram", "mean"]
min_survivors = 4

[[datasets]]
id = "{DATASET}"
resident_column = "patient_id"

[datasets.source]
kind = "csv"
path = "extract.csv"

[datasets.columns]
age = "age"
sex = {{ column = "sex", values = {{ F = "female", M = "male" }} }}
deprivation_decile = "deprivation_decile"
has_diabetes = "has_diabetes"
hba1c = "hba1c"
copd = "copd"
"""
            )

        digest = self._run("civic-board", "digest", str(POLICY)).split()[0]
        manifest = [
            'federation = "Python client tests"',
            "version = 1",
            "",
            "[board]",
            "threshold = 2",
            "",
            "[requirements]",
            "tolerated_colluders = 1",
            "min_survivors = 4",
            "min_rho_per_query = 0.001",
            "max_rounds_per_dataset_per_day = 50",
        ]
        for m in BOARD:
            manifest += ["", "[[board.members]]", f'name = "{m}"', f'key = "{board_keys[m]}"']
        for p in PARTNERS:
            manifest += [
                "",
                "[[partners]]",
                f'name = "{p}"',
                f'organisation = "{p} GP federation"',
                f'identity_key = "{identities[p]}"',
            ]
        manifest += ["", "[[datasets]]", f'id = "{DATASET}"', f'policy_digest = "{digest}"', ""]
        (d / "manifest.toml").write_text("\n".join(manifest))
        self._run("civic-board", "sign", "--key", "chair.key", "manifest.toml")
        self._run("civic-board", "sign", "--key", "member.key", "manifest.toml")
        signed = json.loads((d / "manifest.signed.json").read_text())
        self._call("PUT", "/v1/manifests", chair, signed)

        if self.with_agents:
            for p in PARTNERS:
                agent = self._spawn(
                    "agent", "civic-agent", "run", "--config", "partner.toml", cwd=d / p
                )
                self._procs[-1] = (p, agent)
            # A query's round needs every partner's identity registered (409 otherwise).
            self._await(self._agents_registered, 60, "every agent to register its identity")

    def _healthy(self) -> bool:
        try:
            return requests.get(self.url + "/healthz", timeout=2).ok
        except requests.RequestException:
            return False

    def _agents_registered(self) -> bool:
        for name, proc in self._procs:
            if name in PARTNERS and proc.poll() is not None:
                raise FederationError(
                    f"agent {name} exited {proc.returncode}:\n{self.log(name)[-3000:]}"
                )
        roster = self._call("GET", "/v1/partners/roster", self.tokens["chair"])
        registered = {e["name"] for e in roster if e.get("identity_key")}
        return set(PARTNERS) <= registered

    def _await(self, ready, seconds: float, what: str, proc: subprocess.Popen | None = None):
        deadline = time.monotonic() + seconds
        while not ready():
            if proc is not None and proc.poll() is not None:
                raise FederationError(
                    f"exited {proc.returncode} while waiting for {what}:\n"
                    f"{self.log('coordinator')[-3000:]}"
                )
            if time.monotonic() > deadline:
                raise FederationError(f"timed out after {seconds} s waiting for {what}")
            time.sleep(0.1)

    def stop(self) -> None:
        # Agents first, then the coordinator.
        for _, proc in reversed(self._procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc in reversed(self._procs):
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs.clear()
        for log in self._logs:
            log.close()
        self._logs.clear()
        if self._own_dir and not os.environ.get("CIVIC_KEEP_TEST_DIR"):
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "Federation":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main() -> None:
    def stop(signum, frame):
        raise KeyboardInterrupt

    # Ctrl-C, and SIGTERM too, stop the processes (also when started in the background).
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    fed = Federation()
    try:
        started = time.monotonic()
        fed.start()
        print(f"# federation in {fed.dir} (started in {time.monotonic() - started:.1f} s)")
        print(f"export CIVIC_URL={fed.url}")
        print(f"export CIVIC_TOKEN={fed.tokens['rita']}  # researcher rita, project {PROJECT}")
        print("# Ctrl-C stops it", flush=True)
        while True:
            signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        fed.stop()


if __name__ == "__main__":
    sys.exit(main())
