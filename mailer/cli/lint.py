"""`mailer lint`."""

from __future__ import annotations

import json
from itertools import groupby

import click

from mailer import campaign
from mailer import lint as lint_mod
from mailer.cli.common import Context, pass_ctx
from mailer.errors import EXIT_DATA

_CLIENT_NAMES = ", ".join(c.key for c in lint_mod.CLIENTS)


@click.command(
    epilog="\b\nExamples:\n"
    "  mailer lint issue-2                    everything, for the 13 clients\n"
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
    "or an accessibility or link error. Without it lint only reports (exit 0).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: the whole report for machines, each finding with its origin and clients.",
)
@pass_ctx
def lint(ctx: Context, issue: str, clients: str | None, strict: bool, fmt: str) -> None:
    """Check ISSUE's built email against what email clients support, and for accessibility.

    \b
    The issue is built as `mailer build` builds it (nothing is written), then:
    - Client support: every HTML element and attribute and every CSS property, value, unit,
      selector and at-rule in the built HTML (style blocks, @media, style attributes) is
      looked up in caniemail.com's data for Gmail, Outlook, Apple Mail and Yahoo (the newest
      version of each app and webmail tested there). Only what is unsupported or partial is
      listed, with caniemail's notes, and where it was written: the template line (mj-style
      CSS, an mj-* attribute MJML turns into CSS, a raw tag), the issue line (HTML or
      Markdown in the issue), or "MJML output" for what MJML writes by itself. Repeats of a
      feature in one file share a line ("also lines ...").
    - Accessibility: <html lang>, one <h1>, no skipped heading level, alt text on images,
      link text that means something on its own ("here" does not), text contrast of at
      least 4.5:1 (3:1 for large text) from the inline colours and backgrounds.
    - Links: schemes other than http, https, mailto and tel, empty and relative links,
      http:// links; and what the issue's parser noticed (missing references, Liquid tags).

    \b
    Partial support is often fine (a note about negative margins, say): read the notes.
    Unsupported features need a fallback or a reason; docs/email-clients.md lists the
    default template's and why each is acceptable.
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
        _print(report)
    if strict and report.errors:
        click.echo(
            f"lint --strict: {report.errors} error{'s' if report.errors != 1 else ''}", err=True
        )
        raise click.exceptions.Exit(EXIT_DATA)


def _print(report: lint_mod.Report) -> None:
    click.echo(
        f"mailer lint {report.issue}: {len(report.clients)} email clients, "
        f"caniemail.com data of {report.data_date[:10]}"
    )
    for section in lint_mod.Section:
        findings = report.of(section)
        click.echo()
        click.echo(f"{section.value.capitalize()} ({len(findings)})")
        if not findings:
            click.echo("  nothing to report")
        elif section == lint_mod.Section.CLIENTS:
            for line in client_lines(findings, report):
                click.echo(line)
        else:
            for finding in findings:
                where = finding.origin.shown(report.root)
                click.echo(f"{where}: {finding.severity.value}: {finding.title}")
    click.echo()
    click.echo(totals(report))


def client_lines(findings: tuple[lint_mod.Finding, ...], report: lint_mod.Report) -> list[str]:
    """One line per feature and file; its other lines in that file in "also lines ..."."""

    def key(f: lint_mod.Finding) -> tuple[str, str, str]:
        return (str(f.origin.path or ""), f.code, support_text(f))

    out = []
    for (_, _, text), group in groupby(sorted(findings, key=key), key=key):
        same = sorted(group, key=lambda f: f.origin.line or 0)
        first = same[0]
        also = [str(f.origin.line) for f in same[1:] if f.origin.line]
        more = f" (also line{'s' if len(also) > 1 else ''} {', '.join(also)})" if also else ""
        out.append((first, f"{first.origin.shown(report.root)}: {first.title} — {text}{more}"))
    order = {k: i for i, k in enumerate(lint_mod.OriginKind)}
    out.sort(key=lambda p: (order[p[0].origin.kind], str(p[0].origin.path), p[0].origin.line or 0))
    return [line for _, line in out]


def support_text(finding: lint_mod.Finding) -> str:
    """unsupported in Outlook (Windows): note; partial in Yahoo (webmail), Yahoo (iOS): note"""
    groups: dict[tuple[lint_mod.Support, tuple[str, ...]], list[str]] = {}
    for s in finding.clients:
        groups.setdefault((s.support, s.notes), []).append(s.client.name)
    parts = []
    for (support, notes), names in sorted(groups.items(), key=lambda kv: kv[0][0] != "unsupported"):
        text = f"{support.value} in {', '.join(names)}"
        parts.append(f"{text}: {' '.join(notes)}" if notes else text)
    return "; ".join(parts)


def totals(report: lint_mod.Report) -> str:
    clients = report.of(lint_mod.Section.CLIENTS)
    unsupported = sum(f.severity == lint_mod.Severity.ERROR for f in clients)
    access, links = report.of(lint_mod.Section.ACCESSIBILITY), report.of(lint_mod.Section.LINKS)
    warnings = len(report.findings) - report.errors
    return (
        f"{len(report.findings)} findings: {len(clients)} client support "
        f"({unsupported} unsupported somewhere), {len(access)} accessibility, "
        f"{len(links)} link{'s' if len(links) != 1 else ''}; "
        f"{report.errors} error{'s' if report.errors != 1 else ''}, "
        f"{warnings} warning{'s' if warnings != 1 else ''}"
    )
