"""Problems from a real coordinator, network failures and timeouts, as exceptions."""

from __future__ import annotations

import pickle
import socket
import threading
import time

import pytest
import requests

import civic
from support import MEAN_BY_AGE
from federation import PROJECT

UNKNOWN_COLUMN = {"dataset": "diabetes", "statistic": {"mean": {"column": "bmi"}}}


@pytest.mark.parametrize("call", ["preview", "submit"])
def test_unknown_column_is_a_bad_request(client, call):
    with pytest.raises(civic.BadRequest) as caught:
        getattr(client, call)(UNKNOWN_COLUMN, {"rho": 0.05})
    e = caught.value
    assert isinstance(e, civic.ProblemError) and isinstance(e, civic.CivicError)
    assert e.status == 400
    assert e.code == "policy.query"
    assert e.title == "Bad Request"
    assert "bmi" in e.detail
    assert e.body["code"] == "policy.query"
    assert "policy.query" in str(e) and "bmi" in str(e)


def test_bad_token_is_unauthorized(federation):
    token = "0" * 64
    bad = civic.Client(federation.url, token, project=PROJECT)
    with pytest.raises(civic.Unauthorized) as caught:
        bad.preview(MEAN_BY_AGE, {"rho": 0.05})
    e = caught.value
    assert e.status == 401 and e.code == "auth.bad_token"
    assert token not in str(e) and token not in repr(e)
    assert token not in repr(bad)


def test_the_token_is_never_shown(federation, client):
    token = federation.tokens["rita"]
    assert token not in repr(client) and token not in str(client)
    errors = []
    for call in (
        lambda: client.submit(UNKNOWN_COLUMN, {"rho": 0.05}),
        lambda: client.query(10**9),
        lambda: civic.Client("http://127.0.0.1:1", token).query(1),
    ):
        with pytest.raises(civic.CivicError) as caught:
            call()
        errors.append(caught.value)
    for e in errors:
        assert token not in str(e) and token not in repr(e)
        assert token not in str(e.__cause__) and token not in str(e.__context__)
    # A token that cannot go into a header is refused without echoing it.
    with pytest.raises(ValueError) as caught:
        civic.Client(federation.url, token[:10] + "\n" + token[10:])
    assert token[:10] not in str(caught.value)
    # A trailing newline (a token read from a file) is fine.
    assert civic.Client(federation.url, token + "\n", project=PROJECT).preview(
        MEAN_BY_AGE, {"rho": 0.05}
    ).affordable


def test_over_the_per_query_cap_is_a_conflict(client):
    with pytest.raises(civic.Conflict) as caught:
        client.submit({"dataset": "diabetes", "statistic": "count"}, {"rho": 0.3})
    assert caught.value.status == 409
    assert caught.value.code == "policy.over_budget"


def test_bad_privacy_amount(client):
    with pytest.raises(civic.BadRequest) as caught:
        client.preview({"dataset": "diabetes", "statistic": "count"}, {"rho": -1})
    assert caught.value.code == "query.privacy"


def test_not_a_project_member_is_forbidden(federation):
    otto = civic.Client(federation.url, federation.tokens["otto"], project=PROJECT)
    with pytest.raises(civic.Forbidden) as caught:
        otto.preview(MEAN_BY_AGE, {"rho": 0.05})
    assert caught.value.status == 403 and caught.value.code == "auth.forbidden"


def test_unknown_query_is_not_found(client):
    with pytest.raises(civic.NotFound) as caught:
        client.query(10**9)
    assert caught.value.status == 404 and caught.value.code == "not_found"


def test_problem_errors_pickle(client):
    with pytest.raises(civic.BadRequest) as caught:
        client.preview(UNKNOWN_COLUMN, {"rho": 0.05})
    copy = pickle.loads(pickle.dumps(caught.value))
    assert type(copy) is civic.BadRequest
    assert (copy.status, copy.code, copy.detail) == (400, "policy.query", caught.value.detail)


def test_unreachable_coordinator_is_a_network_error():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = civic.Client(f"http://127.0.0.1:{port}", "t" * 64, project=PROJECT, timeout=5)
    with pytest.raises(civic.NetworkError) as caught:
        client.query(1)
    assert isinstance(caught.value, ConnectionError)
    assert not isinstance(caught.value, civic.RequestTimeout)
    assert f"127.0.0.1:{port}" in str(caught.value)


def test_a_silent_coordinator_is_a_request_timeout():
    # A socket that accepts connections and never answers.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        port = server.getsockname()[1]
        client = civic.Client(f"http://127.0.0.1:{port}", "t" * 64, project=PROJECT, timeout=0.5)
        started = time.monotonic()
        with pytest.raises(civic.RequestTimeout) as caught:
            client.query(1)
        assert time.monotonic() - started < 10
        assert isinstance(caught.value, TimeoutError) and isinstance(caught.value, civic.NetworkError)
        assert "0.5 s" in str(caught.value)
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()


def test_wait_times_out_then_a_rejected_query_has_no_release(client, federation):
    # Above the policy's approval threshold (ρ 0.1): the query waits for the board.
    big = {"dataset": "diabetes", "statistic": "count", "group_by": ["copd"]}
    q = client.submit(big, {"rho": 0.15})
    assert q.state == "awaiting_approval" and not q.done
    started = time.monotonic()
    with pytest.raises(civic.WaitTimeout) as caught:
        client.wait(q, timeout=1.0, poll=0.2)
    waited = time.monotonic() - started
    assert 1.0 <= waited < 10.0
    e = caught.value
    assert isinstance(e, TimeoutError)
    assert e.query_id == q.id and e.state == "awaiting_approval"
    with pytest.raises(civic.NotReleased) as caught:
        client.result(q.id)
    assert caught.value.state == "awaiting_approval"
    # The board rejects it (this refunds the reservation); wait() then returns at once.
    r = requests.post(
        f"{federation.url}/v1/queries/{q.id}/decision",
        headers={"Authorization": f"Bearer {federation.tokens['chair']}"},
        json={"approve": False, "reason": "disproportionate for a pilot"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    done = client.wait(q, timeout=10)
    assert done.state == "rejected" and done.done and not done.released
    assert done.release is None
    with pytest.raises(civic.NotReleased) as caught:
        client.result(done)
    assert caught.value.state == "rejected"
    assert "disproportionate" in str(caught.value)


def test_wait_checks_its_arguments(client):
    with pytest.raises(ValueError):
        client.wait(1, poll=0)
    with pytest.raises(TypeError):
        client.wait("not an id")
