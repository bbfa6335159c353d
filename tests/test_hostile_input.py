"""Untrusted text never reaches the terminal raw: a real `mailer` process, its output read back.

A subscriber list is input from anyone who can sign up or hand over a file. An invalid address
holding CR, LF, NUL, ESC or U+2028 must be shown escaped, so that every problem stays on its
own line and no line can be forged.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import seed_project

pytestmark = pytest.mark.slow  # real `mailer` processes, their output read back

MAILER = Path(sys.executable).with_name("mailer")


def run(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env["MAILER_SECRET"] = "s" * 40
    return subprocess.run(
        [str(MAILER), "-C", str(root), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_control_characters_in_addresses_are_escaped_one_problem_a_line(tmp_path: Path) -> None:
    root = seed_project(tmp_path / "news")
    hostile = [
        '"evil\\r\\nError: forged line"',
        '"nul\\x00@"',
        '"sep\\u2028Error: forged too"',
        '"esc\\x1b[31mred"',
    ]
    rows = [h.encode().decode("unicode_escape") for h in hostile]
    text = "email,name\nada@example.com,Ada\n" + "".join(f"{r},X\n" for r in rows)
    (root / "subscribers.csv").write_text(text, encoding="utf-8")

    done = run(root, "subscribers", "check", "subscribers.csv")

    assert done.returncode == 65, done.stderr
    out = done.stdout.splitlines()
    assert out[0] == "subscribers.csv: 1 subscribers, 4 invalid, 0 skipped"
    problems = out[1:]
    assert len(problems) == 4, done.stdout
    assert problems[0].startswith("  line 3: invalid: evil\\r\\nError: forged line: ")
    assert problems[1].startswith("  line 5: invalid: nul\\x00@: ")
    assert problems[2].startswith("  line 6: invalid: sep\\u2028Error: forged too: ")
    assert problems[3].startswith("  line 7: invalid: esc\\x1b[31mred: ")
    assert not any(line.startswith("Error") for line in done.stdout.splitlines())
    assert "\x1b" not in done.stdout and "\x00" not in done.stdout and "\u2028" not in done.stdout


def test_an_error_quoting_input_stays_one_line(tmp_path: Path) -> None:
    root = seed_project(tmp_path / "news")
    (root / "subscribers.csv").write_text("email,name\nada@example.com,Ada\n", encoding="utf-8")

    done = run(root, "send", "--dry-run", "issue-2\r\nError: forged")

    assert done.returncode == 65, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("Error")]
    assert len(lines) == 1, done.stderr
    assert "issue-2\\r\\nError: forged" in lines[0]
    assert "Traceback" not in done.stderr


def test_a_one_megabyte_field_refuses_one_row_of_a_dry_run(tmp_path: Path) -> None:
    root = seed_project(tmp_path / "news")
    big = "x" * 1_000_000
    (root / "subscribers.csv").write_text(
        f"email,name\nada@example.com,Ada\nbob@example.com,{big}\ncy@example.com,Cy\n",
        encoding="utf-8",
    )

    done = run(root, "send", "--dry-run", "issue-2")

    assert done.returncode == 0, done.stderr
    assert "  recipients   2\n" in done.stdout
    assert "line 3: bob@example.com: row refused: a field longer than 65,536 characters" in (
        done.stdout
    )


def test_a_maildir_symlink_is_never_followed(tmp_path: Path) -> None:
    root = seed_project(tmp_path / "news")
    secret = tmp_path / "outside" / "shadow"
    secret.parent.mkdir()
    secret.write_text("root:$6$not-for-mailer:19000:0:99999:7:::\n", encoding="utf-8")
    maildir = tmp_path / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True)
    (maildir / "new" / "1.link").symlink_to(secret)
    os.mkfifo(maildir / "new" / "2.fifo")  # would block a plain read for ever
    (maildir / "new" / "3.dir").mkdir()

    done = run(root, "bounces", "--maildir", str(maildir), "--verbose")

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].startswith("read 0:"), done.stdout
    assert "not-for-mailer" not in done.stdout + done.stderr
    assert (maildir / "new" / "1.link").is_symlink()  # left where it was, not moved
