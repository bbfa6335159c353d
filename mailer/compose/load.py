"""Issues by name: `issue-2`, `issue-2.md` or a path, found in issues/ and read as the settings say.

Every command, the web archive and the preview load an issue through here; its slug is
`issue.slug_of`, the one rule for an issue's id.
"""

from __future__ import annotations

from pathlib import Path

from mailer.compose import issue as issue_mod
from mailer.compose.issue import Issue, slug_of
from mailer.config import Settings
from mailer.errors import InputError

FOLDER = "issues"  # the project's issues, one NAME.md each


def folder(root: Path) -> Path:
    """The project's issues folder."""
    return root / FOLDER


def files(root: Path) -> list[Path]:
    """Every issue file in the issues folder, by name."""
    return sorted(folder(root).glob("*.md"))


def file_of(root: Path, slug: str) -> Path:
    """Where the issue with this slug is (whether or not it exists)."""
    return folder(root) / f"{slug}.md"


def resolve(name: str, root: Path) -> Path:
    """`issue-2`, `issue-2.md` or a path -> the issue file, or an error listing what exists."""
    candidates = [Path(name), root / name, folder(root) / name, file_of(root, name)]
    for path in candidates:
        if path.is_file():
            return path
    known = sorted(slug_of(p) for p in files(root))
    raise InputError(
        f"no issue {name!r}",
        hint=f"issues in {folder(root)}: {', '.join(known)}" if known else "create issues/NAME.md",
    )


def read(settings: Settings, path: Path) -> Issue:
    """The issue file at `path`, read with the project's language and base URL."""
    return issue_mod.read(path, default_lang=settings.lang, base_url=settings.base_url)


def by_name(settings: Settings, name: str) -> Issue:
    """Find an issue by name (see resolve) and read it."""
    return read(settings, resolve(name, settings.root))
