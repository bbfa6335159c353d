"""`mailer preview` and `mailer serve`: run a local server until Ctrl-C."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from mailer.cli.common import Bounded, Context, pass_ctx, warn
from mailer.errors import ConfigError, MailerError
from mailer.values import SECONDS, Bounds

PORT = Bounds(0, 65535)  # 0: any free port, which the first line names
REQUEST_TIMEOUT = Bounds(0.5, 3600, SECONDS)
MAX_CONNECTIONS = Bounds(16, 1_000_000)
F = TypeVar("F", bound=Callable[..., Any])


def port_option(default: int) -> Callable[[F], F]:
    """--port, bounded, for both servers (0: any free port, which the first line names)."""
    return click.option(
        "--port",
        type=Bounded(PORT),
        default=default,
        show_default=True,
        metavar="PORT",
        help="Port to serve on (0 to 65535; 0: any free port).",
    )


# -- preview ------------------------------------------------------------------------------


@click.command()
@click.argument("issue")
@port_option(8025)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind (loopback unless you ask).",
)
@click.option("--no-open", is_flag=True, help="Do not open a browser.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write the preview as static files to this folder instead of serving it.",
)
@click.option(
    "--as",
    "as_email",
    metavar="EMAIL",
    help="Show the headers this subscriber would get [the first in the list].",
)
@click.option(
    "--to",
    "send_to",
    metavar="ADDRESS",
    help="Offer a button that sends one test copy to ADDRESS, as `mailer send ISSUE --to`.",
)
@pass_ctx
def preview(
    ctx: Context,
    issue: str,
    port: int,
    host: str,
    no_open: bool,
    out: Path | None,
    as_email: str | None,
    send_to: str | None,
) -> None:
    """Preview ISSUE in a browser: phone and desktop widths, plaintext, headers, warnings.

    The page updates by itself when the issue, a template or mailer.toml changes.
    """
    from mailer import preview as preview_mod
    from mailer.state.subscribers import check_email

    if send_to is not None:
        if out is not None:
            raise click.UsageError("--to needs the live preview: it cannot go with --out")
        try:
            send_to = check_email(send_to)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--to") from None
    if out is not None:
        written = preview_mod.write_static(ctx.settings, issue, out, as_email=as_email)
        for path in written:
            click.echo(f"wrote {path}")
        return
    if host not in ("127.0.0.1", "localhost", "::1"):
        warn(f"serving on {host}: anyone who can reach this machine can see the preview")

    def ready(url: str) -> None:
        click.echo(f"previewing {issue} at {url} (Ctrl-C to stop)")
        if not no_open:
            import webbrowser

            webbrowser.open(url)

    _serve(
        lambda: preview_mod.serve(
            ctx.settings,
            issue,
            host=host,
            port=port,
            as_email=as_email,
            send_to=send_to,
            ready=ready,
        ),
        host,
        port,
        "preview",
    )


# -- unsubscribes and the web app ---------------------------------------------------------


@click.command()
@port_option(8080)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind (loopback unless you ask).",
)
@click.option(
    "--request-timeout",
    type=Bounded(REQUEST_TIMEOUT),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="Seconds a request may take to arrive (0.5 to 3600); a slower client is disconnected.",
)
@click.option(
    "--max-connections",
    type=Bounded(MAX_CONNECTIONS),
    default=4096,
    show_default=True,
    metavar="N",
    help="Connections held at once (16 to 1000000); past them a new one is answered 503 at once.",
)
@pass_ctx
def serve(ctx: Context, port: int, host: str, request_timeout: float, max_connections: int) -> None:
    """Serve the one-click unsubscribe endpoint and the web archive.

    \b
    Slow clients cost a socket, never a thread: a request that takes longer than
    --request-timeout to arrive is cut off, and past --max-connections new clients get
    503 with Retry-After instead of waiting. On the internet, put it behind a reverse
    proxy (nginx, Caddy) that terminates TLS; docs/operations.md shows one.
    Or run the same WSGI app under another server: gunicorn 'mailer.web:app'.
    """
    from mailer.web import routes as web
    from mailer.web.limits import Limits

    def ready(url: str) -> None:
        click.echo(f"serving unsubscribe endpoint and archive at {url} (Ctrl-C to stop)")

    limits = Limits(request_timeout=request_timeout, max_connections=max_connections)
    _serve(
        lambda: web.serve(ctx.settings, host=host, port=port, ready=ready, limits=limits),
        host,
        port,
    )


@click.command()
@pass_ctx
def form(ctx: Context) -> None:
    """Print the signup form as HTML to paste into a page of your site.

    \b
    A plain POST to subscribe_url (no JavaScript), served by `mailer serve`: the same
    fields and hidden honeypot as the form at that address.
    """
    from mailer.web.signup import form_html

    settings = ctx.settings
    if not settings.subscribe_url:
        raise ConfigError(
            "no subscribe_url: the form needs the public address `mailer serve` answers at",
            hint="set subscribe_url in mailer.toml, like https://news.example.org/subscribe",
        )
    click.echo(form_html(settings.subscribe_url, settings.list_name), nl=False)


def _serve(run: Callable[[], None], host: str, port: int, what: str = "server") -> None:
    """Run a server until Ctrl-C, which is the normal way to stop it."""
    try:
        run()
    except KeyboardInterrupt:
        click.echo(f"{what} stopped")
    except OSError as exc:
        raise MailerError(
            f"cannot serve on {host}:{port}: {exc.strerror}", hint="try --port"
        ) from None
