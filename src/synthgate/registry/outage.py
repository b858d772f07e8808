"""How long synthgate waits for MLflow, and what it says when MLflow does not answer (#41).

One setting, ``SYNTHGATE_MLFLOW_TIMEOUT`` (seconds, default 30), bounds every request to MLflow,
retries included. MLflow's client reads its own variables (``MLFLOW_HTTP_REQUEST_TIMEOUT``, one
attempt's connect and read timeout; ``MLFLOW_HTTP_REQUEST_MAX_RETRIES``; the backoff's factor and
jitter); :func:`bound_mlflow` sets them from ours where the user has not set them, and
:func:`synthgate.registry.client.connect`, which every command that talks to MLflow goes through,
calls it. Unbounded, MLflow retries 7 times with a backoff of up to 2 minutes: a server killed
during ``register`` was a 4-minute hang, then "unexpected error".

A request that finds no server (refused, reset, timed out, a name that does not resolve, 5xx until
the retries ran out) becomes :class:`RegistryUnavailable`: the tracking URI, what was being done,
how long synthgate waited and what to do (:func:`answers_in_time` for a command, :func:`outage` for
one exception).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from synthgate.errors import ConfigError, SynthgateError

TIMEOUT_ENV = "SYNTHGATE_MLFLOW_TIMEOUT"
DEFAULT_TIMEOUT = 30.0
JITTER = 0.5
#: MLflow's defaults (mlflow/environment_variables.py), for a variable the user set and we do not touch.
_MLFLOW_DEFAULTS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "120", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "7",
                    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "1.0"}
#: The values this process wrote (a value still equal to ours is ours to change; any other is the user's).
_APPLIED: dict[str, str] = {}


class RegistryUnavailable(SynthgateError):
    """The MLflow server cannot be reached, or stopped answering."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None, elapsed: float | None = None,
                 cause: str | None = None, uri: str | None = None) -> None:
        super().__init__(message, hint)
        self.elapsed, self.cause, self.uri = elapsed, cause, uri


def mlflow_timeout() -> float:
    """``SYNTHGATE_MLFLOW_TIMEOUT`` in seconds (default 30; 1 to 3600)."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 1 <= value <= 3600:
        raise ConfigError(f"{TIMEOUT_ENV}={raw!r}: expected a number of seconds from 1 to 3600",
                          hint=f"e.g. {TIMEOUT_ENV}=30 (how long synthgate waits for MLflow, retries included)")
    return value


@dataclass(frozen=True)
class HttpBudget:
    """MLflow's retry settings: ``retries`` after the first attempt, each attempt waiting at most
    ``timeout`` s to connect or read, a backoff of ``factor * 2**(n-1)`` s (+ up to ``jitter``) before
    the n-th consecutive retry from the second on (urllib3's ``Retry``)."""

    timeout: int
    retries: int
    factor: int = 1
    jitter: float = JITTER

    def worst_case(self) -> float:
        """The longest one request can take when every attempt runs into its timeout."""
        sleeps = sum(self.factor * 2 ** (k - 1) + self.jitter for k in range(2, self.retries + 1))
        return (self.retries + 1) * self.timeout + sleeps

    def env(self) -> dict[str, str]:
        return {"MLFLOW_HTTP_REQUEST_TIMEOUT": str(self.timeout), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(self.retries),
                "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": str(self.factor),
                "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": str(self.jitter)}


def budget(total: float) -> HttpBudget:
    """The retry settings whose worst case fits in ``total`` seconds: two attempts of half of it each (30 s:
    2 x 15 s), the retry at once. The retry covers a pooled connection the server had closed (a refused
    connection costs no timeout); a server that is slow but alive is waited for rather than asked again. The
    bound is on waiting for an answer: a transfer that keeps moving is not cut (the read timeout is per read)."""
    retries = 1 if total >= 2 else 0
    return HttpBudget(max(1, int(total // (retries + 1))), retries)


def bound_mlflow() -> HttpBudget:
    """Set MLflow's HTTP retry variables from ``SYNTHGATE_MLFLOW_TIMEOUT`` where the user has not set
    them (a value this process wrote is replaced when the setting changes); -> the budget in effect."""
    wanted = budget(mlflow_timeout()).env()
    for key, value in wanted.items():
        current = os.environ.get(key)
        if current is None or current == _APPLIED.get(key):
            os.environ[key] = value
            _APPLIED[key] = value
    return effective()


def effective() -> HttpBudget:
    """The retry settings MLflow will use now (the user's own values where they set them)."""
    def get(key: str) -> str:
        return os.environ.get(key) or _MLFLOW_DEFAULTS[key]

    try:
        return HttpBudget(int(get("MLFLOW_HTTP_REQUEST_TIMEOUT")), int(get("MLFLOW_HTTP_REQUEST_MAX_RETRIES")),
                          int(get("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR")),
                          float(get("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER")))
    except ValueError:  # MLflow refuses such a value itself, with its own message
        return budget(mlflow_timeout())


@contextlib.contextmanager
def quick(timeout: int = 2) -> Iterator[None]:
    """One attempt of at most ``timeout`` s for the requests of a block: the courtesy calls made after an
    outage (closing a run as FAILED), which must not add a second full wait to the answer."""
    from synthgate.utils import environ

    with environ({"MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}):
        yield


# ------------------------------------------------------------------------------------------ outages
_CAUSES: list[tuple[str, str]] = [
    (r"SSLError|CERTIFICATE_VERIFY_FAILED|certificate verify failed", "TLS failed: the server's certificate is not "
     "trusted here (MLFLOW_TRACKING_SERVER_CERT_PATH)"),
    (r"Connection refused|ECONNREFUSED|Errno 111", "connection refused: nothing listens there"),
    (r"Name or service not known|nodename nor servname|Temporary failure in name resolution|getaddrinfo",
     "the host name does not resolve"),
    (r"RemoteDisconnected|Connection aborted|Connection reset|ECONNRESET|Errno 104|IncompleteRead|"
     r"ChunkedEncodingError|Broken pipe", "the connection was cut: the server stopped in the middle of a request"),
    (r"timed out|timeout exception|ReadTimeout|ConnectTimeout", "no answer: the request timed out"),
    (r"too many (5\d\d|429) error responses", "it answered only errors (overloaded or restarting)"),
    (r"No route to host|Network is unreachable", "no route to the host"),
]
_MLFLOW_HTTP = re.compile(r"API request to (\S+) failed with (timeout )?exception")


def _chain(e: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen and len(seen) < 8:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def is_outage(e: BaseException, mlflow_only: bool = False) -> bool:
    """Whether ``e`` (from an MLflow client call) says the server did not answer, rather than refusing;
    ``mlflow_only``: only MLflow's own report of a failed request (an exception from anywhere)."""
    import requests
    import urllib3.exceptions

    for x in _chain(e):
        if not mlflow_only and isinstance(x, requests.ConnectionError | requests.Timeout | requests.exceptions.ChunkedEncodingError
                      | urllib3.exceptions.MaxRetryError | urllib3.exceptions.ProtocolError | ConnectionError):
            return True
        mlflow_exceptions = sys.modules.get("mlflow.exceptions")
        if mlflow_exceptions is not None and isinstance(x, mlflow_exceptions.MlflowException) and \
                _MLFLOW_HTTP.search(str(x)):
            return True
    return False


def cause_of(e: BaseException) -> str:
    text = " ".join(" ".join(str(x).split()) for x in _chain(e))
    for pattern, words in _CAUSES:
        if re.search(pattern, text, re.I):
            return words
    return f"{type(e).__name__}: {text[:200]}"


def unavailable(uri: str | None, cause: str, doing: str = "", elapsed: float | None = None,
                after: str = "") -> RegistryUnavailable:
    """The message of an MLflow outage: where, what was being done, how long synthgate waited, what to do."""
    from synthgate.registry.client import tracking_uri

    where = tracking_uri(uri)
    try:
        bound = f"{TIMEOUT_ENV}={mlflow_timeout():g} s"
    except ConfigError:
        bound = TIMEOUT_ENV
    waited = f"gave up after {elapsed:.1f} s" if elapsed is not None else "gave up"
    return RegistryUnavailable(
        f"the MLflow server at {where} did not answer{' while ' + doing if doing else ''} ({cause}); synthgate "
        f"{waited} (each request to MLflow is bounded by {bound}, retries included){'; ' + after if after else ''}",
        hint=f"check that the server runs (`make mlflow` locally; the mlflow Deployment in the cluster) and that "
             f"MLFLOW_TRACKING_URI or --tracking-uri names it, then run the command again; to wait longer for a slow "
             f"server, raise {TIMEOUT_ENV}", elapsed=elapsed, cause=cause, uri=where)


def outage(e: BaseException, uri: str | None = None, elapsed: float | None = None, doing: str = "",
           after: str = "", mlflow_only: bool = False) -> RegistryUnavailable | None:
    """:class:`RegistryUnavailable` for an exception that says MLflow did not answer; None for any other."""
    if not is_outage(e, mlflow_only):
        return None
    if uri is None:  # the server MLflow named, else the configured one
        m = next((m for x in _chain(e) if (m := _MLFLOW_HTTP.search(str(x)))), None)
        if m:
            uri = re.sub(r"^(\w+://[^/]+).*$", r"\1", m.group(1))
    return unavailable(uri, cause_of(e), doing, elapsed, after)


def raise_if_outage(e: BaseException, uri: str | None = None) -> None:
    """Raise :func:`outage`'s error for an outage (so that a handler that means "missing" or "unreadable"
    never reads an outage as one); return otherwise."""
    err = outage(e, uri)
    if err is not None:
        raise err from e


F = TypeVar("F", bound=Callable[..., Any])


def answers_in_time(doing: str, after: str = "") -> Callable[[F], F]:
    """Decorate a command that talks to MLflow: an outage inside it becomes :class:`RegistryUnavailable`
    naming the tracking URI (its ``uri`` or ``tracking_uri`` argument), ``doing`` (what it was doing),
    the seconds since the command began and ``after`` (what the outage left behind)."""
    def decorate(fn: F) -> F:
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.monotonic()
            try:
                return fn(*args, **kwargs)
            except RegistryUnavailable as e:
                if e.elapsed is not None or e.cause is None:  # timed already, or a failure that is no outage
                    raise
                raise unavailable(e.uri, e.cause, doing, time.monotonic() - t0, after) from e
            except SynthgateError:
                raise
            except Exception as e:
                err = outage(e, _uri_argument(sig, args, kwargs), time.monotonic() - t0, doing, after)
                if err is None:
                    raise
                raise err from e

        return wrapper  # type: ignore[return-value]

    return decorate


def _uri_argument(sig: inspect.Signature, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    try:
        bound = sig.bind_partial(*args, **kwargs).arguments
    except TypeError:
        return None
    value = bound.get("uri") or bound.get("tracking_uri")
    return value if isinstance(value, str) else None
