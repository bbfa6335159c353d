"""`mailer preview` and `mailer serve`: run a local server until Ctrl-C."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from mailer.cli.common import Context, pass_ctx, warn
from mailer.errors import ConfigError, MailerError

# -- preview ------------------------------------------------------------------------------


@click.command()
@click.argument("issue")
@click.option("--port", type=int, default=8025, show_default=True, help="Port to serve on.")
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
@pass_ctx
def preview(
    ctx: Context,
    issue: str,
    port: int,
    host: str,
    no_open: bool,
    out: Path | None,
    as_email: str | None,
) -> None:
    """Preview ISSUE in a browser: phone and desktop widths, plaintext, headers, warnings.

    The page updates by itself when the issue, a template or mailer.toml changes.
    """
    from mailer import preview as preview_mod

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
            ctx.settings, issue, host=host, port=port, as_email=as_email, ready=ready
        ),
        host,
        port,
        "preview",
    )


# -- unsubscribes and the web app ---------------------------------------------------------


@click.command()
@click.option("--port", type=int, default=8080, show_default=True, help="Port to serve on.")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind (loopback unless you ask).",
)
@click.option(
    "--request-timeout",
    type=click.FloatRange(0.5, 3600),
    default=10.0,
    show_default=True,
    help="Seconds a request may take to arrive; a slower client is disconnected.",
)
@click.option(
    "--max-connections",
    type=click.IntRange(16, 1_000_000),
    default=4096,
    show_default=True,
    help="Connections held at once; past them a new one is answered 503 at once.",
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
