"""The ledger itself fails under a running `mailer send` (a real subprocess, a real SMTP server).

- The ledger file is deleted, or replaced by another one: the send notices (it checks the
  file's identity before each message) and stops with exit 75 instead of mailing on with
  nobody knowing who got the issue.
- The disk under the state directory fills up (a small tmpfs): the outcome the ledger cannot
  take goes to `ledger.journal`, the send stops naming that reader, and the next run records
  the journal before choosing who is owed a copy, so nobody gets two.

A read-only ledger is the same failure as a full disk, but cannot be simulated by chmod when
the tests run as root, so it is not tested here.
"""

from __future__ import annotations

import errno
import os
import re
import select
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailer.errors import DiskFull
from mailer.state.ledger import Ledger
from mailer.state.locks import lock
from mailer.states import DeliveryState

pytestmark = pytest.mark.slow  # real `mailer send` processes whose ledger fails under them

ROOT = Path(__file__).resolve().parent.parent
SERVER_SCRIPT = Path(__file__).resolve().parent / "smtp_server.py"
MAILER = Path(sys.executable).parent / "mailer"
N = 40
ADDRESSES = [f"r{i:02d}@example.com" for i in range(N)]
SEND = [str(MAILER), "send", "issue-2", "--yes"]
FIRST = 5  # the fault strikes once the server has this many messages
SEND_TIMEOUT = 30  # seconds; at 20/s the whole send takes ~2 s


# -- the SMTP server, as a subprocess ------------------------------------------------------


class Server:
    """tests/smtp_server.py in its own process; what it received, from recipients.log."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.proc = subprocess.Popen(
            [sys.executable, str(SERVER_SCRIPT), "--port", "0", "--out", str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        ready, _, _ = select.select([self.proc.stdout], [], [], 20)
        line = self.proc.stdout.readline() if ready else ""  # type: ignore[union-attr]
        found = re.fullmatch(r"READY (\d+)\n", line)
        if found is None:
            self.stop()
            raise RuntimeError(f"the SMTP server did not start: {line!r}")
        self.port = int(found.group(1))

    def recipients(self) -> list[str]:
        """One address per recipient of each accepted message, in arrival order."""
        try:
            text = (self.out / "recipients.log").read_text()
        except FileNotFoundError:
            return []
        lines = text.split("\n")[:-1]  # only complete lines
        return [a.strip().lower() for a in lines]

    def count(self) -> int:
        return len(self.recipients())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "smtp")
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "news"
    (root / "issues").mkdir(parents=True)
    shutil.copy(ROOT / "issues" / "issue-2.md", root / "issues")
    shutil.copy(ROOT / "mailer.toml", root)
    rows = "".join(f"{a},Reader {i},City {i}\n" for i, a in enumerate(ADDRESSES))
    (root / "subscribers.csv").write_text("email,name,city\n" + rows, encoding="utf-8")
    return root


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs, unmounted at teardown whatever happened."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mountpoint = tmp_path / "state"
    mountpoint.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mountpoint)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    try:
        yield mountpoint
    finally:
        done = subprocess.run(["umount", str(mountpoint)], capture_output=True, timeout=30)
        if done.returncode != 0:  # still busy: detach it, so nothing stays mounted
            subprocess.run(["umount", "-l", str(mountpoint)], check=True, timeout=30)


# -- running mailer --------------------------------------------------------------------------


def env_for(server: Server, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update(
        MAILER_SMTP_HOST="127.0.0.1",
        MAILER_SMTP_PORT=str(server.port),
        MAILER_SMTP_SECURITY="none",
        MAILER_SMTP_TIMEOUT="5",
        MAILER_SECRET="test-secret-of-the-suite",
        MAILER_RATE="20/s",
        **extra,
    )
    return env


def start_send(project: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        SEND,
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(server: Server, proc: subprocess.Popen[str], count: int) -> None:
    """Until the server holds `count` messages; the send must still be running then."""
    deadline = time.monotonic() + SEND_TIMEOUT
    while server.count() < count:
        if proc.poll() is not None:
            out, err = proc.communicate(timeout=10)
            pytest.fail(f"the send ended early ({proc.returncode}):\n{out}\n{err}")
        assert time.monotonic() < deadline, "the send never got going"
        time.sleep(0.005)


def finish(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """The send's output once it ended by itself (a hung send fails the test)."""
    try:
        return proc.communicate(timeout=SEND_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=10)
        pytest.fail(f"the send did not stop by itself:\n{out}\n{err}")


def kill(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.communicate(timeout=10)


# -- 1. the ledger is deleted or replaced under a running send --------------------------------


@pytest.mark.parametrize("fault", ["deleted", "replaced"])
def test_ledger_deleted_or_replaced_during_a_send_stops_it(
    fault: str, project: Path, server: Server, tmp_path: Path
) -> None:
    ledger_db = project / ".mailer" / "ledger.db"
    fresh_dir = tmp_path / "fresh"
    if fault == "replaced":  # made beforehand, so the swap itself is one rename
        Ledger(fresh_dir).close()
        assert (fresh_dir / "ledger.db").exists()

    proc = start_send(project, env_for(server))
    try:
        wait_for(server, proc, FIRST)
        before = server.count()
        if fault == "deleted":
            for suffix in ("", "-wal", "-shm"):
                Path(f"{ledger_db}{suffix}").unlink(missing_ok=True)
        else:
            os.replace(fresh_dir / "ledger.db", ledger_db)
        out, err = finish(proc)
    finally:
        kill(proc)

    assert proc.returncode == 75, f"{out}\n{err}"
    assert "deleted or replaced" in err, f"{out}\n{err}"
    assert "Traceback" not in out + err
    after = server.count()
    # The identity is checked before each message: at most the one in flight, and the one
    # whose check raced the deletion, go out afterwards; not the other ~30 readers.
    assert after - before <= 2, (before, after)
    assert after < N


# -- 2. the disk fills up under a running send -----------------------------------------------


def fill(directory: Path) -> Path:
    """A ballast file that takes every last byte of the filesystem (until ENOSPC)."""
    ballast = directory / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    chunk = b"\0" * 65536
    try:
        while True:
            try:
                os.write(fd, chunk)  # a short write, then ENOSPC: the last page is taken too
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    finally:
        os.close(fd)
    return ballast


@pytest.mark.parametrize(
    ("ledger_exists", "error"),
    [
        (False, "ledger.db: cannot use the ledger: database or disk is full"),
        (True, "ledger.db: cannot use the ledger: disk I/O error (the disk is full)"),
    ],
    ids=["new-ledger", "existing-ledger"],
)
def test_a_send_on_a_disk_still_full_is_one_line_and_exit_75(
    project: Path, server: Server, tmpfs: Path, ledger_exists: bool, error: str
) -> None:
    env = env_for(server, MAILER_STATE_DIR=str(tmpfs))
    if ledger_exists:
        made = subprocess.run(
            [str(MAILER), "unsubscribe", "someone@example.org"], cwd=project, env=env, timeout=60
        )
        assert made.returncode == 0
    ballast = fill(tmpfs)
    done = subprocess.run(SEND, cwd=project, env=env, capture_output=True, text=True, timeout=60)
    output = done.stdout + done.stderr
    assert done.returncode == 75, output
    assert "Traceback" not in output
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and errors[0].endswith(error), output
    assert "hint: free some space there, then run the same command again" in done.stderr
    assert server.count() == 0
    ballast.unlink()
    rerun = subprocess.run(SEND, cwd=project, env=env, capture_output=True, text=True, timeout=60)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert sorted(server.recipients()) == sorted(ADDRESSES)


def test_a_lock_on_a_full_disk_is_disk_full_not_a_traceback(tmpfs: Path) -> None:
    (tmpfs / "locks").mkdir()
    (tmpfs / "locks" / "issue-2.lock").touch()  # as an earlier run left it: empty
    ballast = fill(tmpfs)
    with (
        pytest.raises(DiskFull, match="cannot write the lock holder's pid: No space left"),
        lock(tmpfs, "issue-2"),
    ):
        pass
    ballast.unlink()
    with lock(tmpfs, "issue-2", wait=1):  # the failed attempt left the lock free
        pass


def test_disk_full_during_a_send_journals_the_outcome_and_the_rerun_sends_nobody_twice(
    project: Path, server: Server, tmpfs: Path
) -> None:
    env = env_for(server, MAILER_STATE_DIR=str(tmpfs))
    proc = start_send(project, env)
    try:
        wait_for(server, proc, FIRST)
        ballast = fill(tmpfs)
        out, err = finish(proc)
    finally:
        kill(proc)

    output = out + err
    assert proc.returncode == 75, output
    assert "Traceback" not in output
    assert "ledger.journal" in output, output
    named = {a.lower() for a in re.findall(r"r\d\d@example\.com", output)}
    received = set(server.recipients())
    assert received < set(ADDRESSES), "the send went on to the end"

    ballast.unlink()
    # Who the ledger itself holds as sent (opening it replays nothing: only a send does).
    with Ledger(tmpfs) as ledger:
        recorded = {d.email for d in ledger.deliveries("issue-2") if d.state == DeliveryState.SENT}
    unrecorded = received - recorded
    # The reader the server accepted but the ledger could not record is the one named.
    assert len(unrecorded) == 1, (unrecorded, output)
    assert unrecorded <= named, (unrecorded, output)
    assert (tmpfs / "ledger.journal").exists()

    rerun = subprocess.run(SEND, cwd=project, env=env, capture_output=True, text=True, timeout=60)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "Traceback" not in rerun.stdout + rerun.stderr

    copies = Counter(server.recipients())
    assert set(copies) == set(ADDRESSES)
    assert {a: n for a, n in copies.items() if n > 1} == {}  # nobody twice
    (journalled,) = unrecorded
    assert all(copies[a] == 1 for a in ADDRESSES if a != journalled)
    assert copies[journalled] == 1, "the journalled reader was sent a second copy"
    with Ledger(tmpfs) as ledger:
        assert ledger.counts("issue-2").get(DeliveryState.SENT) == N
