"""The shared mailer_cli fixture: exit codes come back, uncaught exceptions do not hide."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import MailerCli

import mailer.cli
from mailer.errors import ConfigError, InputError


@pytest.fixture
def project(new_project: Callable[[str], Path]) -> Path:
    return new_project("email\nada@example.com\n")


def test_a_mailer_error_is_an_exit_code_in_the_result(project: Path, mailer_cli: MailerCli) -> None:
    result = mailer_cli(project, "build", "issue-99")
    assert result.exit_code == InputError.exit_code == 65
    assert isinstance(result.exception, SystemExit)
    assert result.output.splitlines()[0] == "Error: no issue 'issue-99'"


def test_an_uncaught_exception_is_raised_with_its_own_traceback(
    project: Path, mailer_cli: MailerCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_load(*args: object, **kwargs: object) -> None:
        raise KeyError("broken on purpose")

    monkeypatch.setattr(mailer.cli.config_mod, "load", broken_load)
    with pytest.raises(KeyError, match="broken on purpose") as raised:
        mailer_cli(project, "build", "issue-2")
    assert raised.traceback[-1].name == "broken_load"  # where it was raised, not the fixture
    assert any("`mailer build issue-2` printed:" in note for note in raised.value.__notes__)


def test_env_is_given_to_the_command_and_a_none_unsets(
    project: Path, mailer_cli: MailerCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAILER_SMTP_PORT", "x")
    assert mailer_cli(project, "build", "issue-2", env={"MAILER_SMTP_PORT": None}).exit_code == 0
    refused = mailer_cli(project, "build", "issue-2", env={"MAILER_SMTP_PORT": "y"})
    assert refused.exit_code == ConfigError.exit_code == 2, refused.output
    assert "MAILER_SMTP_PORT" in refused.output
