"""A cold `mailer build` (issue 13): what a new process imports, and the shortcuts that keep
it fast changing no byte. Module lists only: nothing here times anything."""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import cssutils  # type: ignore[import-untyped]
import pytest
from dkim.canonicalization import CanonicalizationPolicy

from mailer.compose import render
from mailer.deliver.dkim import relaxed_body

pytestmark = pytest.mark.slow  # fresh `mailer` processes, one per command

PROJECT = Path(__file__).resolve().parents[1]

# Runs one command the way the `mailer` script does, then writes the names of every module the
# process imported to the file named by MAILER_TEST_MODULES.
PROBE = """
import json, os, sys
from mailer.cli import main
try:
    main()
except SystemExit as exc:
    code = exc.code
with open(os.environ["MAILER_TEST_MODULES"], "w") as out:
    json.dump({"code": code, "modules": sorted(sys.modules)}, out)
"""

# Only other commands need these: sending (ledger, transports, DKIM and DNS), address checks,
# the image fetcher, language detection, the preview server.
NOT_FOR_BUILD = (
    "mailer.campaign",
    "mailer.deliver.sender",
    "mailer.state.ledger",
    "mailer.state.store",
    "mailer.deliver.transports",
    "mailer.deliver.dnsrecords",
    "mailer.feedback.classify",
    "mailer.web",
    "mailer.preview",
    "dkim",
    "dns",
    "nacl",
    "cryptography",
    "email_validator",
    "imagesize",
    "py3langid",
    "waitress",
    "flufl",
)
# Nor does `mailer config`: no renderer, no linter, no Markdown.
NOT_FOR_CONFIG = (
    *NOT_FOR_BUILD,
    "mailer.compose.render",
    "mailer.lint",
    "mailer.compose.issue",
    "mailer.lists",
    "jinja2",
    "markdown_it",
    "mjml",
    "premailer",
    "cssutils",
    "lxml",
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "issues").mkdir(parents=True)
    shutil.copy(PROJECT / "issues" / "issue-2.md", root / "issues" / "issue-2.md")
    shutil.copy(PROJECT / "mailer.toml", root / "mailer.toml")
    return root


def imported(project: Path, *args: str) -> set[str]:
    """The modules a new `mailer ARGS` process imports (it must succeed)."""
    listing = project.parent / "modules.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env["MAILER_TEST_MODULES"] = str(listing)
    done = subprocess.run(
        [sys.executable, "-c", PROBE, "-C", str(project), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(listing.read_text(encoding="utf-8"))
    assert found["code"] in (0, None), done.stderr
    return set(found["modules"])


def loaded(modules: set[str], package: str) -> bool:
    return any(m == package or m.startswith(package + ".") for m in modules)


def test_build_imports_nothing_of_the_send_side(project: Path) -> None:
    modules = imported(project, "build", "issue-2")
    assert (project / "build" / "issue-2" / "email.html").is_file()
    assert {"mjml", "premailer", "mailer.lint", "mailer.deliver.message"} <= modules  # it did build
    assert [p for p in NOT_FOR_BUILD if loaded(modules, p)] == []


def test_config_imports_no_renderer(project: Path) -> None:
    modules = imported(project, "config")
    assert "mailer.config" in modules
    assert [p for p in NOT_FOR_CONFIG if loaded(modules, p)] == []


# -- relaxed body canonicalisation without dkimpy ----------------------------------------------

_RELAXED = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
_PIECES = [b"a", b" ", b"\t", b"\r\n", b"\n", b"\r", b"=", b"\r\n\r\n", b"\xc3\xa9"]


def test_relaxed_body_is_dkimpys_byte_for_byte() -> None:
    bodies = [b"".join(p) for n in range(6) for p in itertools.product(_PIECES, repeat=n)]
    rnd = random.Random(13)
    bodies += [b"".join(rnd.choices(_PIECES, k=rnd.randrange(80))) for _ in range(5000)]
    for body in bodies:
        assert relaxed_body(body) == bytes(_RELAXED.canonicalize_body(body)), body


# -- premailer without cssutils' validation ------------------------------------------------------

STYLED = """<!doctype html>
<html><head><style>
  p { color: red; -webkit-text-size-adjust: 100%; mso-line-height-rule: exactly }
  .x { border: 1px solid #ccc !important; colour: blue; width: 12qx }
  @media only screen and (max-width: 480px) { .x { width: 100% !important } }
</style></head>
<body>
  <p class="x" style="font: bold 12px/1.5 Arial; margin: 0 auto; foo: bar">one</p>
  <img src="a.png" style="float: right; display: block; outline: none; width: 50%">
  <img src="b.png" style="float:left;border:0;height:auto;-ms-interpolation-mode:bicubic">
  <div style="background: url(x.png) no-repeat; color: rgba(0,0,0,.5); padding: 1px 2px">x</div>
</body></html>
"""


def test_inline_css_is_the_same_with_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    unchecked = render.inline_css(STYLED)
    assert cssutils.profile.knownNames  # the global profile is back after the transform
    monkeypatch.setattr(render, "_no_profiles", lambda: cssutils.profile)
    assert render.inline_css(STYLED) == unchecked
    assert 'align="right"' in unchecked and 'align="left"' in unchecked  # floats still seen
