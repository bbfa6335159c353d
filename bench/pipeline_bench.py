"""(h, i) SMTP pipelining (RFC 2920): mailer against `smtp-source -d`, and through a delay proxy.

h: loopback msg/s into smtp-sink for smtp-source -d, mailer with smtp_pipelining off/auto.
i: msg/s through bench/delay_proxy.py (an added RTT) for mailer off / auto depth 1 / depth 2,
   against the optimum of one message per RTT per connection; a bare pipelining client
   (`ideal_client`) shows what the proxy lets through.
"""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

from common import run_process

SMTP_SOURCE = Path("/usr/sbin/smtp-source")
SENDER = "newsletter@example.org"

# The configurations of the issue's tables, as MAILER_* settings.
MODES: dict[str, dict[str, str]] = {
    "off": {"smtp_pipelining": "off"},
    "auto, depth 1": {"smtp_pipelining": "auto", "pipeline_depth": "1"},
    "auto, depth 2": {"smtp_pipelining": "auto", "pipeline_depth": "2"},
}

# smtp-source's -l is its payload's size on the wire, line ends included (lines of 78 bytes
# + CRLF); it adds From/To (the -f/-t below), Date and Message-Id headers and a blank line:
# 136 bytes here (checked with smtp-sink -d; the host name and the date move it by a few).
_SMTP_SOURCE_HEADERS = 136


def smtp_source_length(wire_bytes: int) -> int:
    """The -l payload that makes smtp-source's message `wire_bytes` long on the wire."""
    return max(1, wire_bytes - _SMTP_SOURCE_HEADERS)


def smtp_source(
    cwd: Path, port: int, wire_bytes: int, count: int, sessions: int
) -> tuple[float, float]:
    """(wall, CPU) seconds of `smtp-source -d -s SESSIONS -m COUNT`: connections kept, COUNT
    messages in all, each waiting for every reply (smtp-source has no pipelining)."""
    run = run_process(
        [
            SMTP_SOURCE,
            "-d",
            "-s",
            str(sessions),
            "-m",
            str(count),
            "-l",
            str(smtp_source_length(wire_bytes)),
            "-f",
            SENDER,
            "-t",
            "reader@example.com",
            f"127.0.0.1:{port}",
        ],
        cwd=cwd,
    )
    if run.returncode != 0:
        raise RuntimeError(f"smtp-source failed ({run.returncode}): {run.stderr[-1000:]}")
    return run.wall, run.cpu


def advertises_pipelining(port: int) -> bool:
    """Whether the server on 127.0.0.1:port lists PIPELINING in its EHLO reply."""
    import smtplib

    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.ehlo("bench.example")
        return smtp.has_extn("pipelining")


def wire_form(data: bytes) -> bytes:
    """A message as DATA sends it: CRLF line ends, dot-stuffed, ending in CRLF.CRLF."""
    data = re.sub(rb"\r?\n", b"\r\n", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return re.sub(rb"(?m)^\.", b"..", data) + b".\r\n"


async def _session(port: int, body: bytes, first: int, count: int) -> None:
    """One connection: EHLO, then `count` transactions pipelined two deep (RFC 2920 §3.1):
    each body goes out in the same write as the next MAIL/RCPT/DATA. One RTT a message."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def reply(expect: bytes) -> None:
        while True:
            line = await reader.readline()
            if not line.startswith(expect):
                raise RuntimeError(f"expected {expect!r}, got {line!r}")
            if line[3:4] != b"-":
                return

    def envelope(n: int) -> bytes:
        rcpt = f"reader{n:06d}@example.com"
        return f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode()

    await reply(b"220")
    writer.write(b"EHLO bench.example\r\n")
    await reply(b"250")
    writer.write(envelope(first))
    for i in range(count):
        for code in (b"250", b"250", b"354"):
            await reply(code)
        writer.write(body + (envelope(first + i + 1) if i + 1 < count else b"QUIT\r\n"))
        await reply(b"250")
    await reply(b"221")
    writer.close()
    await writer.wait_closed()


def ideal_client(port: int, data: bytes, total: int, connections: int) -> float:
    """Seconds for a bare pipelining client (asyncio, depth 2) to send `total` over N.

    In process; the bench runs it through `ideal_client_process` so that it does not share
    a GIL with the delay proxy's thread."""
    body = wire_form(data)
    share = [total // connections + (i < total % connections) for i in range(connections)]
    starts = [sum(share[:i]) for i in range(connections)]

    async def all_sessions() -> None:
        sessions = (_session(port, body, s, c) for s, c in zip(starts, share, strict=True))
        await asyncio.gather(*sessions)

    start = time.perf_counter()
    asyncio.run(all_sessions())
    return time.perf_counter() - start


def ideal_client_process(cwd: Path, port: int, data: bytes, total: int, connections: int) -> float:
    """ideal_client in a child process (`pipeline_bench.py --ideal`); its own timing."""
    eml = cwd / "ideal-client.eml"
    eml.write_bytes(data)
    args = ["--ideal", str(port), str(eml), str(total), str(connections)]
    done = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"ideal client failed: {done.stderr[-1000:]}")
    return float(done.stdout)


if __name__ == "__main__":
    if sys.argv[1:2] != ["--ideal"] or len(sys.argv) != 6:
        sys.exit("usage: pipeline_bench.py --ideal PORT MESSAGE.eml COUNT CONNECTIONS")
    port_, eml_, total_, conns_ = sys.argv[2:]
    print(ideal_client(int(port_), Path(eml_).read_bytes(), int(total_), int(conns_)))
