"""`mailer init`: a new newsletter's folder, with every file it needs to build, preview and send."""

from __future__ import annotations

import json
import os
import re
import secrets
import unicodedata
from dataclasses import dataclass
from email.utils import parseaddr
from importlib import resources
from pathlib import Path
from string import Template
from urllib.parse import urlsplit

from mailer.compose.brand import DEFAULT_ACCENT
from mailer.compose.load import FOLDER
from mailer.config import CONFIG_FILE
from mailer.errors import ConfigError, MailerError, io_error
from mailer.when import now

SECRET_BYTES = 32  # token_urlsafe(32): 43 characters, 256 bits
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


@dataclass(frozen=True)
class Answers:
    """What a new newsletter needs to know first, each value checked."""

    name: str
    from_: str  # "Name <address>"
    url: str  # where `mailer serve` will answer: https://news.example.org


@dataclass(frozen=True)
class Created:
    """What `init` wrote, in the order it wrote it."""

    root: Path
    files: tuple[Path, ...]  # relative to root
    issue: str  # the example issue's slug


def check_name(text: str) -> str:
    """The newsletter's name: one line of text."""
    name = " ".join(text.split())
    if not name or _CONTROL.search(text.strip()):
        raise ConfigError(f"the name must be one line of text, got {text!r}")
    return name


def check_from(text: str) -> str:
    """`Name <address>` (or a bare address), with a domain in the address."""
    display, address = parseaddr(text)
    local, _, domain = address.rpartition("@")
    if not local or "." not in domain or _CONTROL.search(text) or " " in address:
        raise ConfigError(f"From must look like 'Name <news@example.org>', got {text!r}")
    return f"{display} <{address}>" if display else address


def check_url(text: str) -> str:
    """An http(s) URL without a path's trailing slash: https://news.example.org."""
    url = text.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname or _CONTROL.search(url):
        raise ConfigError(f"the URL must be like https://news.example.org, got {text!r}")
    return url


def default_from(name: str, url: str) -> str:
    """A From to offer: the name, and newsletter@ the site's domain (less a leading www.)."""
    host = (urlsplit(url).hostname or "example.org").removeprefix("www.")
    return f"{name} <newsletter@{host}>"


def slug(name: str) -> str:
    """The example issue's slug: welcome-to-<the name in ASCII>, or welcome."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    words = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:40].strip("-")
    return f"welcome-to-{words}" if words else "welcome"


def files(answers: Answers) -> dict[Path, str]:
    """Each file `init` writes (relative path -> its text)."""
    issue = slug(answers.name)
    url = answers.url
    quoted = {  # TOML and YAML both read a JSON string as the same text
        "name": json.dumps(answers.name, ensure_ascii=False),
        "from_": json.dumps(answers.from_, ensure_ascii=False),
        "unsubscribe_url": json.dumps(f"{url}/unsubscribe"),
        "archive_url": json.dumps(f"{url}/issues"),
        "base_url": json.dumps(f"{url}/"),
        "subscribe_url": json.dumps(f"{url}/subscribe"),
        "title_yaml": json.dumps(f"Welcome to {answers.name}", ensure_ascii=False),
    }
    values = {
        **quoted,
        "title": answers.name,
        "url": url,
        "accent": DEFAULT_ACCENT,
        "secret": secrets.token_urlsafe(SECRET_BYTES),
        "slug": issue,
        "date": now().astimezone().date().isoformat(),
    }
    return {
        Path(CONFIG_FILE): _starter("mailer.toml", values),
        Path(".env"): _starter("env", values),
        Path(".gitignore"): _starter("gitignore", values),
        Path("subscribers.csv"): "email,name\n",
        Path(FOLDER) / f"{issue}.md": _starter("issue.md", values),
    }


def _starter(name: str, values: dict[str, str]) -> str:
    text = resources.files("mailer.data").joinpath("starter", name).read_text(encoding="utf-8")
    return Template(text).substitute(values)


def create(root: Path, answers: Answers) -> Created:
    """Write the files into `root` (made if missing); if any of them exists, write none."""
    planned = files(answers)
    for path in planned:
        if (root / path).exists() or (root / path).is_symlink():
            raise MailerError(f"{root / path} already exists: nothing was written")
    written: list[Path] = []
    try:
        for path, text in planned.items():
            target = root / path
            target.parent.mkdir(parents=True, exist_ok=True)
            # O_EXCL: never over a file that appeared since the check; .env readable by its owner
            mode = 0o600 if path.name == ".env" else 0o666  # the umask still applies
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            written.append(target)
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
                fh.write(text)
    except OSError as exc:
        for target in written:  # all or nothing
            target.unlink(missing_ok=True)
        if isinstance(exc, FileExistsError):
            raise MailerError(f"{exc.filename} already exists: nothing was written") from None
        raise io_error(exc.filename or root, "cannot write", exc) from None
    return Created(root, tuple(planned), slug(answers.name))
