"""Fixtures: one real federation (coordinator, board, five partner agents) for the session.

The binaries come from CIVIC_BIN_DIR (default <repo>/target/debug); see federation.py.
"""

from __future__ import annotations

import pytest

import civic
from federation import PROJECT, Federation, FederationError, bin_dir, missing_binaries
from support import MEAN_BY_AGE, wait_released


@pytest.fixture(scope="session")
def federation():
    missing = missing_binaries(bin_dir())
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not found in {bin_dir()}: build them with `cargo build "
            "-p civic-server -p civic-client-sdk --bins`, or point CIVIC_BIN_DIR at them",
            pytrace=False,
        )
    fed = Federation()
    try:
        fed.start()
    except FederationError as e:
        pytest.fail(f"could not start the federation: {e}", pytrace=False)
    yield fed
    fed.stop()


@pytest.fixture(scope="session")
def client(federation):
    """Researcher rita, a member of the diabetes-care project."""
    return civic.Client(federation.url, federation.tokens["rita"], project=PROJECT, timeout=30)


@pytest.fixture(scope="session")
def mean_by_age(client, federation):
    """MEAN_BY_AGE, submitted and released."""
    return wait_released(client, federation, client.submit(MEAN_BY_AGE, {"rho": 0.05}))
