"""The app's one HTTP client: GET with safe redirects, a size cap, a deadline and cancel.

Weights downloads (:mod:`.weights`) and dropped web images (:mod:`.remote`) both use it:

* only http and https; at most :data:`MAX_HOPS` redirects, never from https to http, never to
  a Location that is not a web link; with ``same_host=True`` never away from the host (and
  port) the person agreed to;
* an optional size cap: a declared Content-Length above it is refused before reading, a body
  that grows past it is cut off;
* an optional overall deadline, a stall timeout and a cancel callable; one watcher thread per
  fetch shuts the socket down when cancel or the deadline fires, waking a read blocked in recv().

Every failure is an :class:`HttpError` subclass, one line; callers put it in their own words.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from .text import brief, display, one_line

Cancel = Callable[[], bool]

CHUNK = 1 << 16
CONNECT_S = 10.0
STALL_S = 30.0
MAX_HOPS = 5
USER_AGENT = "vit-desktop"
POLL_S = 0.05
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS = {"http": 80, "https": 443}


class HttpError(Exception):
    """A fetch that failed.  ``url`` is the link asked for, ``where`` the hop it failed at
    (after redirects), ``reason`` the words without a URL; ``str()`` is ``where: reason``."""

    def __init__(self, url: str, reason: str, *, where: str | None = None) -> None:
        self.url = url
        self.where = where or url
        self.reason = reason
        super().__init__(f"{display(self.where)}: {reason}")


class BadUrl(HttpError):
    """Not a usable web link: another scheme, no host, a bad port or IPv6 address."""


class ConnectFailed(HttpError):
    """No HTTP answer: DNS, refused, unreachable, TLS, a timeout, or a server that does not
    speak HTTP (``protocol``).  ``detail`` says why in one line."""

    def __init__(self, url: str, detail: str, *, where: str, timed_out: bool, protocol: bool) -> None:
        super().__init__(url, f"could not connect ({detail})", where=where)
        self.detail = detail
        self.timed_out = timed_out
        self.protocol = protocol


class BadStatus(HttpError):
    """The server answered, but not with 200 OK."""

    def __init__(self, url: str, status: int, phrase: str, *, where: str) -> None:
        super().__init__(url, f"the server answered {status} {phrase}".rstrip(), where=where)
        self.status = status
        self.phrase = phrase


class RedirectRefused(HttpError):
    """A redirect that breaks the rules (https to http, not a web link, another host)."""


class TooManyRedirects(RedirectRefused):
    """More than :data:`MAX_HOPS` redirects (a loop, most likely)."""


class TooLarge(HttpError):
    """More than ``limit`` bytes: ``declared`` is the Content-Length when the server announced
    too much (nothing was read), None when the body itself grew past the cap."""

    def __init__(self, url: str, limit: int, declared: int | None, *, where: str) -> None:
        said = f"announced {declared} bytes" if declared is not None else "sent more"
        super().__init__(url, f"the server {said}, more than the {limit} bytes allowed", where=where)
        self.limit = limit
        self.declared = declared


class Cancelled(HttpError):
    """The cancel callable said stop."""


class TimedOut(HttpError):
    """The deadline passed or the server went quiet."""


class DeadlineExceeded(TimedOut):
    """The whole fetch took longer than ``deadline_s``."""

    def __init__(self, url: str, deadline_s: float, *, where: str) -> None:
        super().__init__(url, f"took longer than {deadline_s:g} s", where=where)
        self.deadline_s = deadline_s


class Stalled(TimedOut):
    """No data for ``stall_s`` seconds in the middle of the body."""

    def __init__(self, url: str, stall_s: float, received: int, *, where: str) -> None:
        super().__init__(url, f"no data for {stall_s:g} s after {received} bytes", where=where)
        self.stall_s = stall_s
        self.received = received


class Interrupted(HttpError):
    """The connection broke (or ended early) after ``received`` of ``total`` bytes;
    ``cause`` names the error, None when the body simply ended short."""

    def __init__(self, url: str, received: int, total: int | None, cause: str | None, *, where: str) -> None:
        of = f"{received} of {total if total is not None else '?'} bytes"
        super().__init__(url, f"interrupted after {of}" + (f" ({cause})" if cause else ""), where=where)
        self.received = received
        self.total = total
        self.cause = cause


@dataclass(frozen=True)
class Target:
    """A parsed web link: what a connection needs."""

    url: str
    scheme: str
    host: str
    port: int | None
    request: str  # path and query, escaped for the request line

    @property
    def origin(self) -> tuple[str, int | None]:
        """Host and port; a default port counts as none (so http→https on one host is allowed)."""
        port = None if self.port == _DEFAULT_PORTS[self.scheme] else self.port
        return self.host.lower().rstrip("."), port


def parse_url(url: str) -> Target:
    """``url`` as a :class:`Target`, or :class:`BadUrl` saying what is wrong with it."""
    url = url.strip()
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise BadUrl(url, "the link contains control characters")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:  # a bad port, an IPv6 address without its bracket
        raise BadUrl(url, f"malformed link: {brief(str(exc))}") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise BadUrl(url, "only http and https links can be fetched")
    if not parts.hostname:
        raise BadUrl(url, "the link has no host name")
    try:
        request = _escape(parts.path or "/") + (f"?{_escape(parts.query)}" if parts.query else "")
    except UnicodeError:
        raise BadUrl(url, "the link has characters that cannot be sent") from None
    return Target(url, scheme, parts.hostname, port, request)


def _escape(text: str) -> str:
    """Spaces and non-ASCII characters percent-encoded (the request line is ASCII)."""
    return "".join(c if 0x20 < ord(c) < 0x7F else urllib.parse.quote(c, safe="") for c in text)


class _Guard:
    """Cancel and the deadline of one fetch, and the watcher thread that enforces them."""

    def __init__(self, url: str, cancel: Cancel | None, deadline_s: float | None) -> None:
        self.url = url
        self.where = url
        self.conn: http.client.HTTPConnection | None = None  # the current hop's
        self.resp: http.client.HTTPResponse | None = None  # owns the socket on "Connection: close"
        self.sock: socket.socket | None = None
        self._cancel = cancel
        self._deadline_s = deadline_s
        self._start = time.monotonic()
        self._why: HttpError | None = None
        self._lock = threading.Lock()
        self._finished = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._cancel is not None or self._deadline_s is not None:
            self._thread = threading.Thread(target=self._watch, name="http-watch", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._finished.set()
        if self._thread is not None:
            self._thread.join()

    def remaining(self) -> float | None:
        return None if self._deadline_s is None else self._start + self._deadline_s - time.monotonic()

    def poll(self) -> HttpError | None:
        """Why the fetch must stop (cancel or the deadline), or None; the first reason sticks."""
        with self._lock:
            if self._why is None:
                if self._cancel is not None and self._cancel():
                    self._why = Cancelled(self.url, "cancelled", where=self.where)
                elif self._deadline_s is not None and time.monotonic() > self._start + self._deadline_s:
                    self._why = DeadlineExceeded(self.url, self._deadline_s, where=self.where)
            return self._why

    def check(self) -> None:
        """Raise the reason to stop, if there is one (called by the reading thread)."""
        why = self.poll()
        if why is not None:
            raise why

    def _watch(self) -> None:
        while not self._finished.wait(POLL_S):
            sock = self.sock
            if self.poll() is not None and sock is not None:
                # A read blocked in recv() sees neither cancel nor the deadline: shutting the
                # socket down wakes it.  Again on every tick: a redirect may open another.
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close_hop(self) -> None:
        if self.resp is not None:
            self.resp.close()
        if self.conn is not None:
            self.conn.close()
        self.conn = self.resp = self.sock = None


class Response:
    """An open 200 response: ``total`` is the declared length or None; iterate, or read_chunk()."""

    def __init__(
        self, guard: _Guard, resp: http.client.HTTPResponse, max_bytes: int | None, stall_s: float
    ) -> None:
        self.url = guard.url
        self.final_url = guard.where
        self.headers = resp.headers
        self.total: int | None = resp.length
        self.received = 0
        self._guard = guard
        self._resp = resp
        self._max_bytes = max_bytes
        self._stall_s = stall_s
        self._ended = False

    def read_chunk(self, size: int = CHUNK) -> bytes:
        """The next bytes (at most ``size``), ``b""`` at the end; raises :class:`HttpError`."""
        if self._ended:
            return b""
        self._guard.check()
        where = self._guard.where
        if self._max_bytes is not None:  # one byte past the cap tells "too large" from "exactly"
            size = min(size, self._max_bytes - self.received + 1)
        try:
            chunk = self._resp.read1(size)
        except TimeoutError:
            self._guard.check()
            raise Stalled(self.url, self._stall_s, self.received, where=where) from None
        except (http.client.HTTPException, OSError) as exc:
            self._guard.check()  # a socket the watcher shut down: cancel or the deadline
            raise Interrupted(self.url, self.received, self.total, type(exc).__name__, where=where) from None
        self._guard.check()
        if not chunk:
            self._ended = True
            if self.total is not None and self.received < self.total:
                raise Interrupted(self.url, self.received, self.total, None, where=where)
            return b""
        self.received += len(chunk)
        if self._max_bytes is not None and self.received > self._max_bytes:
            raise TooLarge(self.url, self._max_bytes, None, where=where)
        return chunk

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read_chunk():
            yield chunk


@contextlib.contextmanager
def open_stream(url: str, *, max_bytes: int | None = None, deadline_s: float | None = None,
                stall_s: float = STALL_S, connect_s: float = CONNECT_S, cancel: Cancel | None = None,
                headers: Mapping[str, str] | None = None, same_host: bool = False,
                ) -> Iterator[Response]:  # fmt: skip
    """GET ``url`` and yield the open :class:`Response`; the connection is closed on exit.

    ``connect_s`` bounds connecting and waiting for the headers, ``stall_s`` each read of the
    body, ``deadline_s`` (from this call on) everything, including the time the caller spends
    between chunks.  Raises :class:`HttpError` subclasses only."""
    guard = _Guard(url, cancel, deadline_s)
    sent = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **(headers or {})}
    guard.start()
    try:
        resp = _follow(guard, parse_url(url), sent, connect_s, same_host)
        if max_bytes is not None and resp.length is not None and resp.length > max_bytes:
            raise TooLarge(url, max_bytes, resp.length, where=guard.where)
        if guard.sock is not None:
            guard.sock.settimeout(stall_s)
        yield Response(guard, resp, max_bytes, stall_s)
    finally:
        guard.stop()
        guard.close_hop()


def fetch_bytes(url: str, *, max_bytes: int | None = None, deadline_s: float | None = None,
                stall_s: float = STALL_S, connect_s: float = CONNECT_S, cancel: Cancel | None = None,
                headers: Mapping[str, str] | None = None, same_host: bool = False) -> bytes:  # fmt: skip
    """The whole body of ``url`` in memory (for small things; see :func:`open_stream`)."""
    data = bytearray()
    with open_stream(
        url, max_bytes=max_bytes, deadline_s=deadline_s, stall_s=stall_s, connect_s=connect_s,
        cancel=cancel, headers=headers, same_host=same_host,
    ) as resp:  # fmt: skip
        for chunk in resp:
            data += chunk
    return bytes(data)


def _follow(
    guard: _Guard, target: Target, headers: Mapping[str, str], connect_s: float, same_host: bool
) -> http.client.HTTPResponse:
    """The 200 response for ``target``, following redirects by the rules (module docstring)."""
    agreed = target
    for _ in range(MAX_HOPS + 1):
        guard.where = target.url
        resp = _request(guard, target, headers, connect_s)
        if resp.status not in _REDIRECTS:
            if resp.status != 200:
                raise BadStatus(guard.url, resp.status, resp.reason, where=target.url)
            return resp
        location = resp.getheader("Location")
        guard.close_hop()
        if not location:
            raise RedirectRefused(guard.url, "redirect without a location", where=target.url)
        target = _redirect(guard, target, location, agreed if same_host else None)
    why = f"too many redirects (the server still answered {resp.status} {resp.reason} after {MAX_HOPS})"
    raise TooManyRedirects(guard.url, why, where=guard.where)


def _redirect(guard: _Guard, current: Target, location: str, agreed: Target | None) -> Target:
    try:
        new = parse_url(urllib.parse.urljoin(current.url, location.strip()))
    except (BadUrl, ValueError):
        raise RedirectRefused(
            guard.url, f"refused a redirect to {display(location)} (not a web link)", where=current.url
        ) from None
    if current.scheme == "https" and new.scheme != "https":
        raise RedirectRefused(guard.url, f"refused a redirect from https to {new.url}", where=current.url)
    if agreed is not None and new.origin != agreed.origin:
        here = agreed.host if agreed.port is None else f"{agreed.host}:{agreed.port}"
        there = new.host if new.port is None else f"{new.host}:{new.port}"
        raise RedirectRefused(
            guard.url, f"refused a redirect away from {here} to {there} (another host was not agreed to)",
            where=current.url,
        )  # fmt: skip
    return new


def _request(
    guard: _Guard, target: Target, headers: Mapping[str, str], connect_s: float
) -> http.client.HTTPResponse:
    """Connect, send the GET, read the status line and headers of one hop."""
    guard.check()
    remaining = guard.remaining()
    timeout = connect_s if remaining is None else max(0.01, min(connect_s, remaining))
    # An explicit port always: given None, http.client would read "::1" as "host:port".
    port = target.port or (443 if target.scheme == "https" else 80)
    if target.scheme == "https":
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            target.host, port, timeout=timeout, context=ssl.create_default_context()
        )
    else:
        conn = http.client.HTTPConnection(target.host, port, timeout=timeout)
    guard.conn = conn
    try:
        conn.connect()
        guard.sock = conn.sock
        conn.request("GET", target.request, headers=dict(headers))
        guard.resp = resp = conn.getresponse()
    except UnicodeError:  # a host name that IDNA cannot encode
        guard.check()
        raise BadUrl(guard.url, "the host name cannot be looked up", where=target.url) from None
    except (http.client.HTTPException, OSError) as exc:
        guard.check()  # the watcher shut the socket down: cancel or the deadline
        detail = (exc.strerror if isinstance(exc, OSError) else None) or one_line(exc)
        protocol = isinstance(exc, http.client.HTTPException) and not isinstance(exc, OSError)
        raise ConnectFailed(
            guard.url, detail, where=target.url, timed_out=isinstance(exc, TimeoutError), protocol=protocol
        ) from None
    guard.check()
    return resp
