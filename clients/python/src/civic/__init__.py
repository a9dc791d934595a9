"""A researcher's client for the Civic coordinator.

    import civic
    client = civic.Client("https://civic.example.org", token, project="diabetes-care")
    q = client.submit(query, {"rho": 0.05})
    client.wait(q)
    frame = client.result(q)

See ``clients/python/README.md``.
"""

__version__ = "0.1.0"

from .errors import (  # noqa: E402
    BadRequest,
    CivicError,
    Conflict,
    Forbidden,
    NetworkError,
    NotFound,
    NotReleased,
    ProblemError,
    RequestTimeout,
    ServerError,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
    WaitTimeout,
)
from .models import STATES, TERMINAL_STATES, Preview, Query, Release  # noqa: E402
from .client import Client  # noqa: E402

__all__ = [
    "Client",
    "Preview",
    "Query",
    "Release",
    "STATES",
    "TERMINAL_STATES",
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
