"""State is precious: no convenience target deletes it, and git never takes it."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATE = (".mailer", ".env", "subscribers.csv")


def test_make_clean_deletes_no_state() -> None:
    done = subprocess.run(
        ["make", "-n", "clean"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    commands = done.stdout
    assert "rm -rf build .venv" in commands  # it still cleans what it should
    for name in STATE:
        assert name not in commands, commands


def test_git_ignores_state_secrets_and_readers() -> None:
    paths = [".env", "subscribers.csv", ".mailer/ledger.db", ".mailer/dkim/mail.rsa.pem"]
    done = subprocess.run(
        ["git", "check-ignore", "--no-index", *paths], cwd=ROOT, capture_output=True, text=True
    )
    assert done.stdout.split() == paths
