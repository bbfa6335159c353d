"""Process locks: one flock file per name under state_dir/locks, freed by the OS on any exit."""

from __future__ import annotations

import errno
import fcntl
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mailer.errors import LockedError, io_error

_LOCK_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_POLL = 0.05  # seconds between tries while waiting; flock has no timed wait


def _read_pid(fd: int) -> int | None:
    """Read the holder's pid from a lock file; None if it has not written it yet."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


@contextmanager
def lock(state_dir: Path, name: str, *, wait: float = 0.0) -> Iterator[None]:
    """Flock state_dir/locks/<name>.lock; LockedError naming the holder's pid if busy past wait."""
    if not _LOCK_NAME.fullmatch(name):
        raise ValueError(f"lock name {name!r} must be letters, digits, '.', '_' or '-'")
    path = Path(state_dir) / "locks" / f"{name}.lock"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # The file is never deleted: unlinking a flock file lets a waiter lock an orphaned
        # inode while a newcomer locks a fresh one, and then both "hold" the lock.
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise io_error(path, "cannot create the lock file", exc) from exc
    try:
        deadline = time.monotonic() + max(wait, 0.0)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise io_error(path, "cannot lock", exc) from exc
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pid = _read_pid(fd)
                holder = f"process {pid}" if pid else "another process"
                raise LockedError(
                    f"{name}: locked by {holder} ({path})",
                    hint="another mailer run is busy with this; the lock frees itself when "
                    "that process ends",
                )
            time.sleep(min(_POLL, remaining))
        # flock belongs to the open file, so the OS drops it when this process dies, even by
        # kill -9; the pid is only there to name the holder in the message above.
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        except OSError as exc:
            fcntl.flock(fd, fcntl.LOCK_UN)
            raise io_error(path, "cannot write the lock holder's pid", exc) from exc
        try:
            yield
        finally:
            # Clear the pid while still holding the lock, so it never names a finished run.
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
