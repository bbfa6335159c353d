"""A TCP proxy on 127.0.0.1 that adds a round-trip time: `delay_proxy.py --to PORT --rtt 0.05`.

Every chunk read from either side is written to the other side RTT/2 after it arrived, in
order, each at its own time (a chunk never waits for the one before it to be delayed: a
client that writes MAIL, RCPT and DATA back to back has all three delivered RTT/2 later, not
3 x RTT/2). Bandwidth is not limited.

The TCP handshake is charged by delaying the upstream connect by one RTT (SYN, SYN-ACK):
the server's greeting then reaches the client 1.5 RTT after its connect() (a real link gives
2 RTT, as the server's accept() also waits for the third packet of the handshake: 0.5 RTT per
connection less, which is negligible next to a batch of messages). EOF travels like data.

In process: `with delay_proxy(target_port, rtt) as port: ...` (its own event loop in a
thread). `--check` measures it: a ping-pong over it, which should take one RTT per exchange.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import statistics
import sys
import threading
import time
from collections.abc import Iterator

CHUNK = 256 * 1024


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy reader to writer, each chunk delivered `delay` seconds after it was read."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:  # EOF, delayed like the data before it
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(deliver())
    try:
        while True:
            data = await reader.read(CHUNK)
            queue.put_nowait((loop.time() + delay, data))
            if not data:
                break
        await sender
    except (ConnectionError, OSError):
        sender.cancel()
        writer.close()  # the other direction then sees EOF and ends too


class DelayProxy:
    """The proxy's server: forwards 127.0.0.1:port to 127.0.0.1:target with `rtt` added."""

    def __init__(self, target: int, rtt: float, handshake_rtts: float = 1.0) -> None:
        self.target, self.rtt, self.handshake = target, rtt, handshake_rtts * rtt
        self.port = 0
        self.connections = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        _nodelay(writer)
        try:
            await asyncio.sleep(self.handshake)
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except (OSError, asyncio.CancelledError):
            writer.close()
            return
        _nodelay(up_writer)
        half = self.rtt / 2
        try:
            await asyncio.gather(_pipe(reader, up_writer, half), _pipe(up_reader, writer, half))
        except asyncio.CancelledError:
            pass  # the proxy is stopping (a cancelled stream callback would log a traceback)
        finally:
            for w in (writer, up_writer):
                w.close()
                with contextlib.suppress(ConnectionError, OSError):
                    await w.wait_closed()

    async def start(self, port: int = 0) -> asyncio.Server:
        server = await asyncio.start_server(self._serve, "127.0.0.1", port, backlog=256)
        self.port = server.sockets[0].getsockname()[1]
        return server


@contextlib.contextmanager
def delay_proxy(target: int, rtt: float, handshake_rtts: float = 1.0) -> Iterator[int]:
    """Run a DelayProxy to `target` in a background thread; yields its listening port."""
    loop = asyncio.new_event_loop()
    proxy = DelayProxy(target, rtt, handshake_rtts)
    server = loop.run_until_complete(proxy.start())
    thread = threading.Thread(target=loop.run_forever, name="delay-proxy", daemon=True)
    thread.start()
    try:
        yield proxy.port
    finally:

        async def stop() -> None:
            server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@contextlib.contextmanager
def _echo_server() -> Iterator[int]:
    """A blocking echo server on a free port that greets with b'hi\\n' (like SMTP's 220)."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                threading.Thread(target=echo, args=(conn,), daemon=True).start()

    def echo(conn: socket.socket) -> None:
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.sendall(b"hi\n")
            while data := conn.recv(65536):
                conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


def check(rtt: float, exchanges: int = 20) -> tuple[float, float, float]:
    """(greeting after connect, median ping-pong, median of 3 pipelined pings) in seconds.

    Over a proxy to an echo server. Expected: 1.5 RTT, 1 RTT, and 1 RTT (three 1-byte writes
    sent back to back come back together: the proxy does not serialise them).
    """
    with _echo_server() as echo, delay_proxy(echo, rtt) as port:
        start = time.perf_counter()
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with sock:
            if sock.recv(16) != b"hi\n":
                raise RuntimeError("no greeting through the proxy")
            greeting = time.perf_counter() - start
            pings, bursts = [], []
            for _ in range(exchanges):
                t0 = time.perf_counter()
                sock.sendall(b"x")
                sock.recv(16)
                pings.append(time.perf_counter() - t0)
            for _ in range(exchanges // 4 or 1):
                t0 = time.perf_counter()
                for _ in range(3):
                    sock.sendall(b"y")
                    time.sleep(rtt / 10)  # three separate chunks, RTT/10 apart
                got = b""
                while len(got) < 3:
                    got += sock.recv(16)
                bursts.append(time.perf_counter() - t0 - 2 * rtt / 10)
    return greeting, statistics.median(pings), statistics.median(bursts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--to", type=int, help="target port on 127.0.0.1")
    parser.add_argument("--rtt", type=float, default=0.05, help="round-trip time, s [0.05]")
    parser.add_argument("--port", type=int, default=0, help="listening port [a free one]")
    parser.add_argument(
        "--handshake-rtts", type=float, default=1.0, help="RTTs added to each connect [1]"
    )
    parser.add_argument("--check", action="store_true", help="measure the proxy and exit")
    args = parser.parse_args()
    if args.check:
        greeting, ping, burst = check(args.rtt)
        print(
            f"rtt {args.rtt * 1000:.0f} ms: greeting {greeting * 1000:.1f} ms after connect, "
            f"ping-pong {ping * 1000:.1f} ms, 3 back-to-back pings {burst * 1000:.1f} ms"
        )
        return 0
    if args.to is None:
        parser.error("--to PORT is required (or --check)")

    async def serve() -> None:
        proxy = DelayProxy(args.to, args.rtt, args.handshake_rtts)
        server = await proxy.start(args.port)
        print(f"127.0.0.1:{proxy.port} -> 127.0.0.1:{args.to}, rtt {args.rtt}s", flush=True)
        async with server:
            await server.serve_forever()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
