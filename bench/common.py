"""Shared by the benchmarks: a scratch project, subscriber lists, timed processes, smtp-sink."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MAILER = BIN / "mailer"
SMTP_SINK = Path("/usr/sbin/smtp-sink")
SPAWN = Path(__file__).resolve().with_name("spawn.py")
SECRET = "bench-signing-key-0123456789"
ISSUE = "issue-2"


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def timed(fn: Callable[[], object], runs: int, warmup: int = 1) -> list[float]:
    """Seconds per call of fn, `runs` times after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def make_project(root: Path) -> Path:
    """A scratch copy of the project (issues + mailer.toml; templates are the built-in ones)."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO / "issues", root / "issues", dirs_exist_ok=True)
    shutil.copy(REPO / "mailer.toml", root / "mailer.toml")
    return root


def write_subscribers(path: Path, count: int) -> Path:
    """count valid, distinct subscribers at example.com; every 10th has a non-ASCII name."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["email", "name", "city"])
        for i in range(count):
            name = f"Zoë Müller {i}" if i % 10 == 0 else f"Reader {i}"
            writer.writerow([f"reader{i:06d}@example.com", name, "Lyon"])
    return path


def mailer_env(state_dir: Path | None = None, **settings: str) -> dict[str, str]:
    """This process's environment without MAILER_* variables, plus the given settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env["MAILER_SECRET"] = SECRET
    if state_dir is not None:
        env["MAILER_STATE_DIR"] = str(state_dir)
    env.update({f"MAILER_{k.upper()}": v for k, v in settings.items()})
    return env


def sink_env(state_dir: Path, port: int, **settings: str) -> dict[str, str]:
    """mailer_env for a send into a sink on 127.0.0.1:port (no TLS) from `state_dir`."""
    return mailer_env(
        state_dir, smtp_host="127.0.0.1", smtp_port=str(port), smtp_security="none", **settings
    )


@dataclass
class Run:
    """One finished child process."""

    wall: float  # seconds from spawn to exit
    cpu: float  # the child's user + system CPU seconds
    max_rss_kib: int  # the child's peak resident set (ru_maxrss, KiB on Linux)
    returncode: int
    stdout: str
    stderr: str


def run_process(
    args: Sequence[str | Path],
    *,
    cwd: Path,
    env: dict[str, str] | None = None,
    stdout_to_devnull: bool = False,
    timeout: float = 600,
) -> Run:
    """Run a command; wall time includes process start. Peak RSS is the command's own.

    The command is started by spawn.py (see there why), which times it and reads its rusage.
    """
    out_path = cwd / ".bench-stdout"
    err_path = cwd / ".bench-stderr"
    figures = cwd / ".bench-run.json"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", str(SPAWN), str(figures), *map(str, args)],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL if stdout_to_devnull else out,
            stderr=err,
            start_new_session=True,  # its own process group: a timeout ends the command too
        )
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise RuntimeError(f"{args[0]} ran for over {timeout:.0f} s") from None
    data = json.loads(figures.read_text())
    run = Run(
        data["wall"],
        data["cpu"],
        data["max_rss_kib"],
        data["returncode"],
        out_path.read_text(errors="replace"),
        err_path.read_text(errors="replace"),
    )
    for path in (out_path, err_path, figures):
        path.unlink()
    return run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_smtp(port: int, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(512).startswith(b"220"):
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing answered SMTP on 127.0.0.1:{port}")


@contextlib.contextmanager
def smtp_sink() -> Iterator[int]:
    """Postfix's smtp-sink (accepts and discards) on a free loopback port; yields the port."""
    port = free_port()
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    proc = subprocess.Popen(
        [str(SMTP_SINK), *user, "-c", f"127.0.0.1:{port}", "256"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_smtp(port)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"
