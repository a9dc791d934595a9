"""The exceptions the client raises: one hierarchy under :class:`CivicError`.

``CivicError``
    ``ProblemError``: the coordinator answered with an error (a problem+json body). It
    carries the stable ``code`` (``policy.over_budget``, ``auth.bad_token``, ...), the HTTP
    ``status``, ``title`` and ``detail``. Subclassed by status:
    ``BadRequest`` (400), ``Unauthorized`` (401), ``Forbidden`` (403), ``NotFound`` (404),
    ``Conflict`` (409), ``TooManyRequests`` (429), ``ServerError`` (5xx) and its
    ``ServiceUnavailable`` (503).

    ``NetworkError``: the coordinator could not be reached or the connection failed (also a
    built-in ``ConnectionError``); ``RequestTimeout`` is one HTTP request that took longer
    than the client's ``timeout`` (also a built-in ``TimeoutError``).

    ``WaitTimeout``: :meth:`civic.Client.wait` gave up before the query reached a terminal
    state (also a built-in ``TimeoutError``). The query goes on running.

    ``NotReleased``: a result was asked of a query that was aborted, rejected or is not
    finished.

No exception's text ever holds the client's token.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CivicError",
    "ProblemError",
    "BadRequest",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "Conflict",
    "TooManyRequests",
    "ServerError",
    "ServiceUnavailable",
    "NetworkError",
    "RequestTimeout",
    "WaitTimeout",
    "NotReleased",
]


class CivicError(Exception):
    """Every error this client raises."""


class ProblemError(CivicError):
    """The coordinator refused a request (RFC 9457 problem details).

    Attributes:
        status: The HTTP status (``int``).
        code: The stable machine-readable code, e.g. ``"policy.over_budget"``; ``None`` when
            the answer was not a problem body (a proxy's error page, say).
        title: The status's short summary, e.g. ``"Conflict"``.
        detail: What was wrong with this request, in words.
        type: The problem type URI (``urn:civic:problem:<code>``).
        method, url: The request that failed (the URL never holds the token).
        retry_after: Seconds to wait before retrying, from ``Retry-After`` (429 and 503).
        body: The problem body as a ``dict`` (empty when there was none).
    """

    def __init__(
        self,
        status: int,
        code: str | None,
        title: str | None,
        detail: str | None,
        *,
        type: str | None = None,
        method: str | None = None,
        url: str | None = None,
        retry_after: float | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.type = type
        self.method = method
        self.url = url
        self.retry_after = retry_after
        self.body = dict(body or {})
        super().__init__(self._message())

    def _message(self) -> str:
        head = f"{self.status} {self.title or ''}".strip()
        if self.code:
            head += f" [{self.code}]"
        text = f"{head}: {self.detail}" if self.detail else head
        if self.method and self.url:
            text += f" ({self.method} {self.url})"
        return text

    def __reduce__(self):  # keeps the attributes through pickling (multiprocessing, joblib)
        return (
            _rebuild_problem,
            (
                type(self),
                self.status,
                self.code,
                self.title,
                self.detail,
                {
                    "type": self.type,
                    "method": self.method,
                    "url": self.url,
                    "retry_after": self.retry_after,
                    "body": self.body,
                },
            ),
        )


def _rebuild_problem(cls, status, code, title, detail, kwargs):
    return cls(status, code, title, detail, **kwargs)


class BadRequest(ProblemError):
    """400: the request is invalid (an unknown column, a bad privacy amount, bad JSON)."""


class Unauthorized(ProblemError):
    """401: no token, or a token the coordinator does not know (``auth.bad_token``)."""


class Forbidden(ProblemError):
    """403: the token's role may not do this (``auth.forbidden``)."""


class NotFound(ProblemError):
    """404: no such query, dataset or project (or not yours to see)."""


class Conflict(ProblemError):
    """409: valid, but not now: over budget (``policy.over_budget``), an identical query
    in flight (``query.identical_in_flight``), ..."""


class TooManyRequests(ProblemError):
    """429: slow down; ``retry_after`` says for how long."""


class ServerError(ProblemError):
    """5xx: the coordinator failed; its log has the cause."""


class ServiceUnavailable(ServerError):
    """503: busy or timed out (``store.busy``, ``request.timeout``); retry after
    ``retry_after`` seconds."""


_BY_STATUS: dict[int, type[ProblemError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    429: TooManyRequests,
    503: ServiceUnavailable,
}


def problem_class(status: int) -> type[ProblemError]:
    """The exception class for an HTTP error status."""
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if status >= 500:
        return ServerError
    return ProblemError


class NetworkError(CivicError, ConnectionError):
    """The coordinator could not be reached, or the connection failed mid-request."""


class RequestTimeout(NetworkError, TimeoutError):
    """One HTTP request took longer than the client's ``timeout``."""


class WaitTimeout(CivicError, TimeoutError):
    """:meth:`civic.Client.wait` gave up; the query is still in ``state`` and goes on.

    Attributes:
        query_id: The query.
        state: Its last state seen (``"running"``, ``"awaiting_approval"``), or ``None``.
        waited: Seconds waited.
    """

    def __init__(self, query_id: int, state: str | None, waited: float) -> None:
        self.query_id = query_id
        self.state = state
        self.waited = waited
        super().__init__(
            f"query {query_id} is still {state or 'unknown'} after {waited:.1f} s; "
            "it goes on running: wait again, or read it later"
        )

    def __reduce__(self):
        return (type(self), (self.query_id, self.state, self.waited))


class NotReleased(CivicError):
    """A result was asked of a query with no release.

    Attributes:
        query_id: The query.
        state: ``"aborted"``, ``"rejected"``, ``"running"`` or ``"awaiting_approval"``.
        reason: Why it was aborted or rejected, as the coordinator says.
    """

    def __init__(self, query_id: int, state: str, reason: str | None = None) -> None:
        self.query_id = query_id
        self.state = state
        self.reason = reason
        if state in ("aborted", "rejected"):
            text = f"query {query_id} was {state} and has no release"
        else:
            text = f"query {query_id} is {state} and has no release yet: wait() for it first"
        if reason:
            text += f": {reason}"
        super().__init__(text)

    def __reduce__(self):
        return (type(self), (self.query_id, self.state, self.reason))
