"""The researcher's client: preview, submit, wait for and read queries over the REST API."""

from __future__ import annotations

import os
import time
from typing import Any, Mapping

import pandas as pd
import requests

from . import __version__
from .errors import (
    CivicError,
    NetworkError,
    NotReleased,
    ProblemError,
    RequestTimeout,
    ServiceUnavailable,
    TooManyRequests,
    WaitTimeout,
    problem_class,
)
from .models import Preview, Query, Release

__all__ = ["Client"]

_HIDDEN = "***"


class _Bearer(requests.auth.AuthBase):
    """Adds the bearer token to each request; shows nothing of it."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, r):
        r.headers["Authorization"] = f"Bearer {self._token}"
        return r

    def __repr__(self) -> str:
        return "<bearer token hidden>"


def _check_token(token: Any) -> str:
    if not isinstance(token, str):
        raise TypeError(f"the token must be a str, not {type(token).__name__}")
    token = token.strip()  # a token read from a file often ends with a newline
    if not token:
        raise ValueError("the token is empty")
    if not all(33 <= ord(ch) <= 126 for ch in token):
        raise ValueError(
            "the token holds characters an HTTP header cannot carry (whitespace or "
            "non-ASCII); it is shown once by the coordinator: copy it exactly"
        )
    return token


def _query_id(query: int | str | Query) -> int:
    if isinstance(query, Query):
        return query.id
    if isinstance(query, bool):
        raise TypeError("a query id is an int, not a bool")
    try:
        return int(query)
    except (TypeError, ValueError):
        raise TypeError(f"a query id is an int (or a civic.Query), not {query!r}") from None


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        return None  # an HTTP date: the coordinator sends seconds


class Client:
    """A researcher's connection to a Civic coordinator.

    Args:
        url: The coordinator, e.g. ``"https://civic.example.org"`` (default: the
            ``CIVIC_URL`` environment variable).
        token: The researcher's bearer token (default: ``CIVIC_TOKEN``). Keep it out of
            notebooks: read it from the environment or a file. It never appears in
            ``repr()`` or in an exception's text.
        project: The project whose allocation pays, used when a call names none.
        timeout: Seconds one HTTP request may take (connect and read) before
            :class:`civic.RequestTimeout`.
        verify: TLS verification, as in ``requests``: ``True``, or the path of a CA bundle
            for a coordinator with a private CA.
        session: A ``requests.Session`` to use (for proxies, adapters); the client sets its
            own authentication on each request.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        project: str | None = None,
        timeout: float = 60.0,
        verify: bool | str = True,
        session: requests.Session | None = None,
    ) -> None:
        url = url if url is not None else os.environ.get("CIVIC_URL")
        if not url:
            raise ValueError("no coordinator URL: pass url= or set CIVIC_URL")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"the coordinator URL must start with https:// or http://: {url!r}")
        if token is None:
            token = os.environ.get("CIVIC_TOKEN")
            if token is None:
                raise ValueError("no token: pass token= or set CIVIC_TOKEN")
        self.url = url.rstrip("/")
        self.project = project
        self.timeout = timeout
        self._token = _check_token(token)
        self._auth = _Bearer(self._token)
        self._session = session or requests.Session()
        self._verify = verify

    def __repr__(self) -> str:
        return f"civic.Client(url={self.url!r}, project={self.project!r})"

    # -- plumbing ---------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, _HIDDEN) if self._token else text

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        url = self.url + path
        try:
            response = self._session.request(
                method,
                url,
                json=body,
                auth=self._auth,
                timeout=self.timeout,
                verify=self._verify,
                headers={
                    "Accept": "application/json, application/problem+json",
                    "User-Agent": f"civic-client-python/{__version__}",
                },
            )
        except requests.Timeout as e:
            raise RequestTimeout(
                f"{method} {url}: no answer within {self.timeout} s "
                f"({type(e).__name__}); the coordinator may be overloaded or unreachable"
            ) from None
        except requests.ConnectionError as e:
            raise NetworkError(
                f"cannot reach the coordinator at {self.url} ({method} {path}): "
                f"{self._scrub(str(e))}"
            ) from None
        except requests.RequestException as e:
            raise NetworkError(
                f"{method} {url} failed: {type(e).__name__}: {self._scrub(str(e))}"
            ) from None
        if response.status_code >= 400:
            raise self._problem(method, url, response)
        try:
            return response.json()
        except ValueError:
            raise CivicError(
                f"{method} {url} answered {response.status_code} with a body that is not "
                f"JSON ({response.headers.get('Content-Type', 'no content type')}): "
                f"{self._scrub(response.text[:200])!r}"
            ) from None

    def _problem(self, method: str, url: str, response: requests.Response) -> ProblemError:
        body: dict[str, Any] = {}
        try:
            parsed = response.json()
            if isinstance(parsed, dict):
                body = parsed
        except ValueError:
            pass
        status = response.status_code
        if "code" in body:
            code, title, detail = body.get("code"), body.get("title"), body.get("detail")
        else:  # not a problem body: a proxy, a load balancer
            code, title = None, response.reason
            detail = self._scrub(response.text[:300]).strip() or None
        cls = problem_class(status)
        return cls(
            status,
            code,
            title or response.reason,
            self._scrub(detail) if isinstance(detail, str) else detail,
            type=body.get("type"),
            method=method,
            url=url,
            retry_after=_retry_after(response.headers.get("Retry-After")),
            body=body,
        )

    def _request_body(
        self,
        query: Mapping[str, Any],
        privacy: Mapping[str, Any],
        confidence: float | None,
        project: str | None,
    ) -> dict[str, Any]:
        project = project if project is not None else self.project
        if not project:
            raise ValueError("no project: pass project= here or to Client(project=...)")
        if not isinstance(query, Mapping) or not isinstance(privacy, Mapping):
            raise TypeError(
                'query and privacy are dicts, e.g. query={"dataset": "diabetes", '
                '"statistic": "count"}, privacy={"rho": 0.05}'
            )
        body: dict[str, Any] = {"project": project, "query": dict(query), "privacy": dict(privacy)}
        if confidence is not None:
            body["confidence"] = confidence
        return body

    # -- the API ----------------------------------------------------------------------------

    def preview(
        self,
        query: Mapping[str, Any],
        privacy: Mapping[str, Any],
        confidence: float | None = None,
        project: str | None = None,
    ) -> Preview:
        """What ``query`` would cost and how accurate it would be; nothing is spent.

        Args:
            query: The question, as the API takes it: ``{"dataset": ..., "statistic": ...,
                "filter": ..., "group_by": [...]}``.
            privacy: ``{"rho": 0.05}`` (zCDP), ``{"epsilon": 0.5}`` (pure ε, on
                central-noise datasets only) or
                ``{"target_half_width": {"half_width": 10, "mechanism": "gaussian"}}``.
            confidence: Confidence level of the intervals (the coordinator's default: 0.95).
            project: The paying project (default: the client's).
        """
        body = self._request_body(query, privacy, confidence, project)
        return Preview.from_json(self._request("POST", "/v1/queries/preview", body))

    def submit(
        self,
        query: Mapping[str, Any],
        privacy: Mapping[str, Any],
        confidence: float | None = None,
        project: str | None = None,
    ) -> Query:
        """Submits ``query``: its cost is reserved and it runs (or waits for the board's
        approval). Returns the :class:`Query`; its ``id`` is what :meth:`wait` and
        :meth:`result` take. An identical question already released is answered at once,
        at no cost (``release.reused``). Arguments as for :meth:`preview`."""
        body = self._request_body(query, privacy, confidence, project)
        return Query.from_json(self._request("POST", "/v1/queries", body))

    def query(self, query: int | Query) -> Query:
        """The query now: its state, cost, approvals and, once released, its release."""
        return Query.from_json(self._request("GET", f"/v1/queries/{_query_id(query)}"))

    def wait(
        self, query: int | Query, timeout: float | None = 300.0, poll: float = 1.0
    ) -> Query:
        """Waits until the query is released, aborted or rejected, and returns it.

        Polls every ``poll`` seconds. A query awaiting the board's approval is not finished:
        it waits for the board too. After ``timeout`` seconds (``None``: no limit) raises
        :class:`civic.WaitTimeout` (the query goes on running). Once the first poll has
        succeeded, a poll that meets a network error or a busy coordinator (503, 429) is
        retried until the timeout. Check ``.state`` (or call :meth:`result`, which raises
        :class:`civic.NotReleased`) for an aborted or rejected query.
        """
        if poll <= 0:
            raise ValueError("poll must be a positive number of seconds")
        qid = _query_id(query)
        start = time.monotonic()
        deadline = None if timeout is None else start + timeout
        current = self.query(qid)
        while not current.done:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise WaitTimeout(qid, current.state, now - start)
            pause = poll if deadline is None else min(poll, deadline - now)
            time.sleep(pause)
            try:
                current = self.query(qid)
            except (NetworkError, ServiceUnavailable, TooManyRequests) as e:
                retry = getattr(e, "retry_after", None)
                if retry and retry > poll:
                    later = time.monotonic() + retry
                    time.sleep(max(0.0, min(later, deadline or later) - time.monotonic()))
                continue
        return current

    def release(self, query: int | Query) -> Release:
        """The query's :class:`Release` (values, intervals, labels, receipt); raises
        :class:`civic.NotReleased` if it has none (aborted, rejected, not finished)."""
        current = query if isinstance(query, Query) and query.release else self.query(query)
        if current.release is None:
            raise NotReleased(current.id, current.state, current.reason)
        return current.release

    def result(self, query: int | Query, wide: bool = False) -> pd.DataFrame:
        """The query's release as a pandas DataFrame (see :meth:`Release.to_frame`): long
        by default, one row per statistic and cell, with the key columns, ``statistic``,
        ``value``, ``lower`` and ``upper``; ``wide=True`` for one row per cell. The release
        id and receipt are in ``frame.attrs`` (and on :meth:`release`)."""
        return self.release(query).to_frame(wide=wide)

    def datasets(self) -> list[dict[str, Any]]:
        """The datasets on this coordinator (``GET /v1/datasets``)."""
        return self._request("GET", "/v1/datasets")

    def dataset(self, dataset: str) -> dict[str, Any]:
        """A dataset's current policy: its columns, bounds, bins and domains, the budget
        (``GET /v1/datasets/{id}``)."""
        return self._request("GET", f"/v1/datasets/{requests.utils.quote(dataset, safe='')}")
