"""The private Postfix owes nothing to the machine's: with /etc/postfix/main.cf and master.cf
set up for something else, or absent, it still delivers to its own Maildir.

The machine's files are never touched: each case runs in a private mount namespace
(`unshare --mount`) where a copy of /etc/postfix, changed, is mounted over the real one; the
Postfix started there sees only that copy, and everyone else on the machine the real one.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from postfix import requires_postfix

TESTS = Path(__file__).resolve().parent
UNSHARE = shutil.which("unshare")


def _can_unshare() -> bool:
    if UNSHARE is None:
        return False
    done = subprocess.run([UNSHARE, "--mount", "true"], capture_output=True, timeout=30)
    return done.returncode == 0


pytestmark = [
    *requires_postfix,
    pytest.mark.skipif(
        not _can_unshare(), reason="needs `unshare --mount` (util-linux, CAP_SYS_ADMIN)"
    ),
]

# What a machine's own Postfix might be set up for, each of which would stop or steal the
# test's mail were it read: a relay to a dead port, mail refused, a content filter nobody
# runs, example.com delivered locally, a header check that discards.
ODD_MAIN_CF = """\
relayhost = [127.0.0.1]:9
default_transport = error:5.0.0 the machine refuses everything
inet_interfaces = loopback-only
content_filter = smtp:[127.0.0.1]:9
mydestination = example.com, localhost
virtual_mailbox_domains =
smtpd_recipient_restrictions = reject
header_checks = regexp:/etc/postfix/discard-everything
"""
ODD_MASTER_CF = """\
smtp      inet  n       -       y       -       -       smtpd -o content_filter=smtp:[127.0.0.1]:9
cleanup   unix  n       -       y       -       0       cleanup -o header_checks=regexp:/nowhere
virtual   unix  -       n       n       -       -       discard
qmgr      unix  n       -       n       300     1       qmgr
"""

# Runs inside the namespace: the private Postfix, one message through it, the outcome.
PROBE = """
import json, smtplib, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from postfix import running_postfix

etc = Path("/etc/postfix")
seen = {n: (etc / n).read_text() if (etc / n).exists() else None for n in ("main.cf", "master.cf")}
with running_postfix() as server:
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
        refused = client.sendmail(
            "newsletter@example.org",
            ["ada@example.com"],
            b"From: newsletter@example.org\\r\\nTo: ada@example.com\\r\\nSubject: probe\\r\\n"
            b"Message-ID: <probe@example.org>\\r\\nDate: Mon, 07 Dec 2026 09:00:00 +0000\\r\\n"
            b"\\r\\nThe body.\\r\\n",
        )
    deadline = time.monotonic() + 30
    while not server.delivered() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # anything more would show up now
    files = [p.read_bytes().decode() for p in server.delivered()]
    print(json.dumps({"seen": seen, "refused": refused, "files": files, "log": server.log()}))
"""


def _probe(tmp_path: Path, main_cf: str | None, master_cf: str | None) -> dict:
    """PROBE's outcome with the machine's main.cf and master.cf these (None: absent)."""
    etc = tmp_path / "etc-postfix"
    shutil.copytree("/etc/postfix", etc, symlinks=True)
    for name, text in (("main.cf", main_cf), ("master.cf", master_cf)):
        (etc / name).unlink(missing_ok=True)
        if text is not None:
            (etc / name).write_text(text)
    script = 'mount --bind "$1" /etc/postfix && shift && exec "$@"'
    done = subprocess.run(
        [UNSHARE, "--mount", "--propagation", "private", "sh", "-c", script, "sh", etc]
        + [sys.executable, "-c", PROBE, str(TESTS)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def _delivered_as_usual(outcome: dict) -> None:
    assert outcome["refused"] == {}
    [delivered] = outcome["files"]
    assert "Delivered-To: ada@example.com\n" in delivered
    assert delivered.endswith("\nThe body.\n")
    log = outcome["log"]
    assert log.count("status=sent (delivered to maildir)") == 1, log
    assert "127.0.0.1]:9" not in log and "warning" not in log, log


def test_delivers_when_the_machines_postfix_is_set_up_for_something_else(
    tmp_path: Path,
) -> None:
    outcome = _probe(tmp_path, ODD_MAIN_CF, ODD_MASTER_CF)
    assert outcome["seen"] == {"main.cf": ODD_MAIN_CF, "master.cf": ODD_MASTER_CF}
    _delivered_as_usual(outcome)


def test_delivers_when_the_machine_has_no_main_cf_or_master_cf(tmp_path: Path) -> None:
    outcome = _probe(tmp_path, None, None)
    assert outcome["seen"] == {"main.cf": None, "master.cf": None}
    _delivered_as_usual(outcome)
