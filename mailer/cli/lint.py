"""`mailer lint`."""

from __future__ import annotations

import json
from itertools import groupby

import click

from mailer import campaign
from mailer import lint as lint_mod
from mailer.cli.common import Context, pass_ctx
from mailer.errors import EXIT_DATA
from mailer.lint.report import FAMILIES, counts

_CLIENT_NAMES = ", ".join(c.key for c in lint_mod.CLIENTS)


@click.command(
    epilog="\b\nExamples:\n"
    "  mailer lint issue-2                    what to fix in the issue, one line each\n"
    "  mailer lint issue-2 --verbose          and every caveat, the template's included\n"
    "  mailer lint issue-2 --client outlook   only what Outlook lacks\n"
    "  mailer lint issue-2 --strict           exit 65 on an error (for CI)\n"
    "  mailer lint issue-2 --format json | jq '.findings[] | select(.severity == \"error\")'"
)
@click.argument("issue")
@click.option(
    "--client",
    "clients",
    metavar="LIST",
    help="Only these clients, comma-separated: gmail, outlook, apple-mail, yahoo, or one "
    f"platform ({_CLIENT_NAMES}). Accessibility and link checks are always made.",
)
@click.option(
    "--strict",
    is_flag=True,
    help="Exit 65 when there is an error: a feature some client does not support at all, "
    "or an accessibility or link error. The built-in template has none (its fallbacks are "
    "warnings), so a clean issue exits 0. Without it lint only reports (exit 0).",
)
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    help="Also list partial support in the issue (with caniemail's notes), and what the "
    "template, the render and MJML output use, grouped: designed fallbacks and partial support.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: every finding for machines, each with its origin, clients, notes and "
    "fallback reason; --verbose changes nothing there.",
)
@pass_ctx
def lint(
    ctx: Context, issue: str, clients: str | None, strict: bool, verbose: bool, fmt: str
) -> None:
    """Check ISSUE's built email: what you can fix in the issue, one line each.

    \b
    The issue is built as `mailer build` builds it (nothing is written), then:
    - Client support: every HTML element and attribute and every CSS property, value, unit,
      selector and at-rule in the built HTML (style blocks, @media, style attributes) is
      looked up in caniemail.com's data for Gmail, Outlook, Apple Mail and Yahoo (the newest
      version of each app and webmail tested there). Unsupported somewhere is an error,
      partial support a warning. Each finding names where it was written: the issue line
      (HTML or Markdown in the issue), the template line (mj-style CSS, an mj-* attribute
      MJML turns into CSS, a raw tag), the issue line of an image the render sized, or
      "MJML output" for what MJML writes by itself.
    - Accessibility: <html lang>, one <h1>, no skipped heading level, alt text on images,
      link text that means something on its own ("here" does not), text contrast of at
      least 4.5:1 (3:1 for large text) from the inline colours and backgrounds.
    - Links: schemes other than http, https, mailto and tel, empty and relative links,
      http:// links; and what the issue's parser noticed (missing references, Liquid tags).
    - Front matter: a `#` that YAML reads as a comment in title, subject or preheader.

    \b
    What is printed: every error, and the issue's own accessibility, link and front matter
    warnings, one line each (`issues/NAME.md:LINE: error: ...`), the issue's first; then one
    summary line. A clean issue prints only that line. --verbose adds partial support (often
    fine: read caniemail's notes) and, grouped in a few lines, what the built-in template,
    the render and MJML output use: not yours to fix. The built-in template is clean at
    error level: what some client ignores there is a designed fallback, a warning whose
    reason --format json gives. A template of your own is yours: its errors are printed,
    one line per feature.
    """
    try:
        chosen = lint_mod.select_clients(clients)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--client") from None
    email = campaign.load(ctx.settings, issue)
    report = lint_mod.lint(email, ctx.settings, clients=chosen)
    if fmt == "json":
        click.echo(json.dumps(lint_mod.as_dict(report), indent=2, ensure_ascii=False))
    else:
        for line in report_lines(report, verbose=verbose):
            click.echo(line)
    if strict and report.errors:
        click.echo(
            f"lint --strict: {report.errors} error{'s' if report.errors != 1 else ''}", err=True
        )
        raise click.exceptions.Exit(EXIT_DATA)


def report_lines(report: lint_mod.Report, *, verbose: bool = False) -> list[str]:
    """The issue's findings first, then any other error, then (verbose) the rest; a summary."""
    shown = [f for f in report.findings if report.shown(f)]
    issue = [f for f in shown if f.origin.kind == lint_mod.OriginKind.ISSUE]
    out = [_line(f, report) for f in sorted(_not_clients(issue), key=_by_line)]
    out += client_lines([f for f in issue if _is_client(f)], report, notes=verbose)
    others = [f for f in shown if f.origin.kind != lint_mod.OriginKind.ISSUE]
    out += [_line(f, report) for f in sorted(_not_clients(others), key=_by_line)]
    out += client_lines([f for f in others if _is_client(f)], report, notes=verbose)
    hidden = [f for f in report.findings if not report.shown(f)]
    if verbose:
        yours = [f for f in hidden if f.origin.kind == lint_mod.OriginKind.ISSUE]
        out += client_lines(yours, report, notes=True)
        out += grouped([f for f in hidden if f not in yours], report)
    found = counts(shown) if shown else "nothing to fix"
    more = f"; --verbose: {len(hidden)} more notes" if hidden and not verbose else ""
    clients = f"{len(report.clients)} email client{'s' if len(report.clients) != 1 else ''}"
    out.append(
        f"mailer lint {report.issue}: {found} ({clients}, "
        f"caniemail.com data of {report.data_date[:10]}{more})"
    )
    return out


def _is_client(f: lint_mod.Finding) -> bool:
    return f.section == lint_mod.Section.CLIENTS


def _not_clients(findings: list[lint_mod.Finding]) -> list[lint_mod.Finding]:
    return [f for f in findings if not _is_client(f)]


def _by_line(f: lint_mod.Finding) -> tuple[str, int]:
    return (str(f.origin.path or ""), f.origin.line or 0)


def _line(f: lint_mod.Finding, report: lint_mod.Report) -> str:
    return f"{f.origin.shown(report.root)}: {f.severity.value}: {f.title}"


def client_lines(
    findings: list[lint_mod.Finding], report: lint_mod.Report, *, notes: bool
) -> list[str]:
    """One line per feature and file; its other lines in that file in "also lines ..."."""

    def key(f: lint_mod.Finding) -> tuple[str, str, str]:
        return (str(f.origin.path or ""), f.code, support_text(f, notes=notes))

    out = []
    for (_, _, text), group in groupby(sorted(findings, key=key), key=key):
        same = sorted(group, key=lambda f: f.origin.line or 0)
        first = same[0]
        also = [str(f.origin.line) for f in same[1:] if f.origin.line]
        more = f" (also line{'s' if len(also) > 1 else ''} {', '.join(also)})" if also else ""
        line = f"{_line(first, report)} — {text}{more}"
        out.append((first.severity != lint_mod.Severity.ERROR, _by_line(first), line))
    return [line for *_, line in sorted(out)]


def support_text(finding: lint_mod.Finding, *, notes: bool = True) -> str:
    """unsupported in Outlook (Windows): note; partial in Yahoo: note (notes: caniemail's)"""
    groups: dict[tuple[lint_mod.Support, tuple[str, ...]], list[lint_mod.Client]] = {}
    for s in finding.clients:
        groups.setdefault((s.support, s.notes if notes else ()), []).append(s.client)
    parts = []
    unsupported_first = sorted(groups.items(), key=lambda kv: kv[0][0] != "unsupported")
    for (support, said), clients in unsupported_first:
        text = f"{support.value} in {_names(clients)}"
        parts.append(f"{text}: {' '.join(said)}" if said else text)
    return "; ".join(parts)


def _names(clients: list[lint_mod.Client]) -> str:
    """Yahoo (webmail), Yahoo (iOS), Yahoo (Android) -> Yahoo: a whole family by its name."""
    names = []
    for family, members in groupby(clients, key=lambda c: c.family):
        listed = list(members)
        every = [c for c in lint_mod.CLIENTS if c.family == family]
        names += [FAMILIES[family]] if listed == every else [c.name for c in listed]
    return ", ".join(names)


def grouped(findings: list[lint_mod.Finding], report: lint_mod.Report) -> list[str]:
    """What the template, the render and MJML output use: one line per kind of finding."""
    whose = "template" if any(report.yours(f) for f in findings) else "built-in template"
    kinds = (
        ("designed fallbacks (unsupported somewhere; --format json says why)", "fallback"),
        ("partly supported", "partial"),
        ("other findings", "other"),
    )
    out = []
    for label, kind in kinds:
        titles = sorted({f.title for f in findings if _kind(f) == kind}, key=str.lower)
        if titles:
            out.append(
                f"{whose}, render and MJML output: {len(titles)} {label}: {', '.join(titles)}"
            )
    return out


def _kind(f: lint_mod.Finding) -> str:
    if f.fallback:
        return "fallback"
    return "partial" if _is_client(f) and f.severity == lint_mod.Severity.WARNING else "other"
