"""`pip install .` (not editable) carries everything a build needs: the templates ship inside."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a real `pip install .` into a fresh virtualenv

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package installed from a copy of the sources (no .git, no build output) into a folder."""
    work = tmp_path_factory.mktemp("install")
    source = work / "src"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", ".mailer", "*.egg-info", "__pycache__"
        ),
    )
    target = work / "site"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(target),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        pytest.fail(f"pip install . failed:\n{result.stdout}\n{result.stderr}")
    return target


def test_installed_package_builds_an_issue_in_any_folder(installed: Path, tmp_path: Path) -> None:
    project = tmp_path / "newsletter"
    (project / "issues").mkdir(parents=True)
    shutil.copy(ROOT / "issues" / "issue-2.md", project / "issues")
    code = (
        "import sys, mailer; sys.argv[0] = 'mailer'; print(mailer.__file__, file=sys.stderr);"
        " from mailer.cli import main; main()"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "build", "issue-2"],
        cwd=project,
        env={"PYTHONPATH": str(installed), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[0].startswith(str(installed))  # not the checkout
    html = (project / "build" / "issue-2" / "email.html").read_text(encoding="utf-8")
    assert "Welcome back to the NLP Newsletter!" in html
    assert (installed / "mailer" / "compose" / "templates" / "newsletter.mjml.j2").is_file()
    assert (installed / "mailer" / "preview" / "page.html").is_file()
    # Nothing of the project's own folders leaked into site-packages as a package.
    assert not (installed / "issues").exists() and not (installed / "templates").exists()
