"""What a slow or greedy client may hold of `mailer serve`, and what the rest are told.

Waitress serves every open connection from one event loop and hands a request to a worker
thread only once it has fully arrived, so a slow client costs a socket, not a thread. Two
things are left open by waitress itself, and bounded here:

- how long a request may take to arrive: a client that trickles its headers or body (slow
  loris) is disconnected `request_timeout` seconds after its first byte;
- what happens past the connection limit: waitress stops accepting, and every new client,
  /healthz included, waits in the kernel's backlog. Here a connection past the limit is
  accepted and answered at once with 503 and Retry-After, then closed.
"""

from __future__ import annotations

import contextlib
import socket
import time
from dataclasses import dataclass
from typing import Any

from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer

REQUEST_TIMEOUT = 10.0  # seconds from a request's first byte to its last
MAX_CONNECTIONS = 4096  # open connections held at once, each one file descriptor
SPARE_FDS = 64  # file descriptors kept for the ledger, logs and the 503 answers
CHECK_EVERY = 1.0  # seconds between two sweeps for requests that take too long
# Connections accepted per turn of the event loop. waitress accepts one a turn, and each turn
# polls every open socket: a burst of thousands would then take seconds to get through.
ACCEPT_BATCH = 128

BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 29\r\n"
    b"Retry-After: 5\r\n"
    b"Connection: close\r\n"
    b"\r\n"
    b"busy: too many open requests\n"
)


@dataclass(frozen=True)
class Limits:
    """How long a request may take to arrive, and how many connections are held."""

    request_timeout: float = REQUEST_TIMEOUT
    max_connections: int = MAX_CONNECTIONS


def connection_ceiling(wanted: int) -> int:
    """`wanted`, or fewer if the process may not open that many files (raising its soft limit
    to the hard one first, as servers do)."""
    try:
        import resource
    except ImportError:  # Windows: no such limit to read
        return wanted
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + SPARE_FDS
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(16, min(wanted, soft - SPARE_FDS))


class _Channel(HTTPChannel):  # type: ignore[misc]
    """A waitress connection that knows when its current request began to arrive."""

    arriving_since: float | None = None

    def received(self, data: bytes) -> bool:
        now = time.monotonic()
        if self.request is None and data:
            self.arriving_since = now
        done: bool = super().received(data)
        if self.request is None:
            self.arriving_since = None  # complete: now a worker's, or nothing pending
        elif self.arriving_since is None:
            self.arriving_since = now  # the start of a pipelined next request
        return done


class GuardedServer(TcpWSGIServer):  # type: ignore[misc]
    """waitress' TCP server with a request deadline and a 503 past the connection limit."""

    channel_class = _Channel
    next_channel_cleanup: float  # waitress' own, declared for the type checker

    def __init__(self, *args: Any, limits: Limits, **kwargs: Any) -> None:
        self.limits = limits
        self.held = connection_ceiling(limits.max_connections)
        self.refused_busy = 0  # connections answered 503 (for the log and the tests)
        self.cut_slow = 0  # connections closed because a request took too long to arrive
        self._next_sweep = 0.0
        super().__init__(*args, **kwargs)

    def readable(self) -> bool:
        """Always accept: past the limit, handle_accept answers 503 instead of waiting."""
        now = time.time()
        if now >= self.next_channel_cleanup:  # waitress' own idle-connection sweep
            self.next_channel_cleanup = now + self.adj.cleanup_interval
            self.maintenance(now)
        mono = time.monotonic()
        if mono >= self._next_sweep:
            self._next_sweep = mono + CHECK_EVERY
            self._cut_slow(mono)
        return bool(self.accepting)

    def handle_accept(self) -> None:
        """Accept what is waiting (up to ACCEPT_BATCH); past the limit, answer 503 and close."""
        for _ in range(ACCEPT_BATCH):
            try:
                pair = self.accept()
            except OSError:  # the client gave up before we got to it
                return
            if pair is None:  # nothing more waiting
                return
            conn, addr = pair
            if len(self.active_channels) >= self.held:
                self._refuse(conn)
                continue
            self.channel_class(self, conn, self.fix_addr(addr), self.adj, map=self._map)

    def _refuse(self, conn: socket.socket) -> None:
        self.refused_busy += 1
        with contextlib.suppress(OSError):
            conn.setblocking(False)
            conn.send(BUSY)
            conn.shutdown(socket.SHUT_WR)
        conn.close()

    def _cut_slow(self, now: float) -> None:
        deadline = now - self.limits.request_timeout
        for channel in list(self.active_channels.values()):
            since = getattr(channel, "arriving_since", None)
            if since is not None and since < deadline and not channel.will_close:
                channel.will_close = True  # closed by the loop at its next write turn
                self.cut_slow += 1
