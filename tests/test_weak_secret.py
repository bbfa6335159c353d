"""A real send refuses a placeholder or short MAILER_SECRET: one line, exit 2, nothing sent.

The secret signs unsubscribe links, VERP addresses and Message-IDs: the `.env.example` value
`change-me` would let anyone unsubscribe any reader or forge a bounce for them. A dry run
and the preview sign nothing that leaves the machine, so they still work.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import smtp_env
from smtp_server import SMTPServer

pytestmark = pytest.mark.slow  # real `mailer` processes

MAILER = Path(sys.executable).with_name("mailer")
PLACEHOLDER = "Error: MAILER_SECRET is a placeholder: anyone could sign links"


@pytest.fixture
def project(new_project: Callable[[str], Path]) -> Path:
    return new_project("email,name\nada@example.com,Ada\n")


def send(
    project: Path, server: SMTPServer, secret: str, *args: str
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update(smtp_env(server), MAILER_SECRET=secret)
    return subprocess.run(
        [str(MAILER), "-C", str(project), "send", "issue-2", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


@pytest.mark.parametrize(
    ("secret", "error"),
    [
        ("change-me", PLACEHOLDER),
        ("CHANGE-ME-before-going-live", PLACEHOLDER),
        ("aaaaaaaaaaaaaaaaaaaaaaaa", PLACEHOLDER),
        ("mailer-dev-secret-not-for-real-sends", PLACEHOLDER),
        ("s3cr3t-k3y-0x1", "Error: MAILER_SECRET has 14 characters: use at least 16"),
    ],
)
def test_a_real_send_refuses_a_weak_secret(
    project: Path, smtp_server: SMTPServer, secret: str, error: str
) -> None:
    done = send(project, smtp_server, secret, "--yes")
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error")]
    assert errors == [error]
    assert 'hint: make one: python3 -c "import secrets; print(secrets.token_urlsafe(32))"' in (
        done.stderr
    )
    assert secret not in done.stdout + done.stderr
    assert smtp_server.received == []


def test_the_dry_run_works_with_the_placeholder(project: Path, smtp_server: SMTPServer) -> None:
    done = send(project, smtp_server, "change-me", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert smtp_server.received == []


def test_a_strong_secret_sends(project: Path, smtp_server: SMTPServer) -> None:
    done = send(project, smtp_server, "Qm9yZWFsLXJhbmRvbS1zZWNyZXQ", "--yes")
    assert done.returncode == 0, done.stderr
    assert len(smtp_server.received) == 1
