"""(c) Messages per second into Postfix's smtp-sink: mailer, a bare smtplib ceiling, mailmerge."""

from __future__ import annotations

import re
import shutil
import smtplib
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from common import BIN, ISSUE, MAILER, mailer_env, run_process, sink_env, write_subscribers

SENDER = "newsletter@example.org"
_SUMMARY = re.compile(r"sent (\d+), deferred (\d+), failed (\d+) in ([\d.]+)s(?: \((\d+)/s\))?")


@dataclass
class SendRun:
    wall: float  # the whole process, start to exit
    sent: int
    loop: float  # mailer's own "in X s": the send loop alone
    cpu: float  # the process's user + system CPU seconds
    warnings: str = ""  # mailer's stderr lines that say "is not a setting"

    @property
    def rate(self) -> float:
        return self.sent / self.wall

    @property
    def loop_rate(self) -> float:
        return self.sent / self.loop if self.loop else 0.0


def sample_message(project: Path) -> bytes:
    """One of mailer's own dry-run .eml files: the exact bytes a real send puts on the wire."""
    subscribers = write_subscribers(project / "sample-subscribers.csv", 3)
    run = run_process(
        [MAILER, "send", ISSUE, "--dry-run", "--subscribers", subscribers],
        cwd=project,
        env=mailer_env(project / ".mailer-dry"),
    )
    if run.returncode != 0:
        raise RuntimeError(f"mailer send --dry-run failed: {run.stderr[-2000:]}")
    return sorted((project / "build" / ISSUE / "dry-run").glob("*.eml"))[0].read_bytes()


def mailer_send(
    project: Path,
    port: int,
    subscribers: Path,
    connections: int,
    batch: int,
    settings: Mapping[str, str] | None = None,
    timeout: float = 600,
) -> SendRun:
    """`mailer send` to every subscriber, from an empty ledger; `settings` become MAILER_*."""
    state = Path(tempfile.mkdtemp(prefix="mailer-bench-state-"))
    try:
        env = sink_env(state, port, **(settings or {}))
        run = run_process(
            [
                MAILER,
                "send",
                ISSUE,
                "--yes",
                "--rate",
                "off",
                "--batch-size",
                str(batch),
                "--connections",
                str(connections),
                "--subscribers",
                subscribers,
            ],
            cwd=project,
            env=env,
            timeout=timeout,
        )
    finally:
        shutil.rmtree(state, ignore_errors=True)
    m = _SUMMARY.search(run.stdout)
    if run.returncode != 0 or m is None:
        raise RuntimeError(
            f"mailer send failed ({run.returncode}): {run.stdout[-1000:]} {run.stderr[-2000:]}"
        )
    sent, deferred, failed, loop = int(m[1]), int(m[2]), int(m[3]), float(m[4])
    if m[5] and int(m[5]) and 0.5 / int(m[5]) < 0.05 / max(loop, 0.05):
        loop = sent / int(m[5])  # "(N/s)" is finer than "in X.Xs" for a short, fast send
    if deferred or failed:
        raise RuntimeError(f"mailer send: {deferred} deferred, {failed} failed")
    warnings = "; ".join(ln.strip() for ln in run.stderr.splitlines() if "not a setting" in ln)
    return SendRun(run.wall, sent, loop, run.cpu, warnings)


def ceiling(
    port: int, data: bytes, total: int, connections: int, batch: int
) -> tuple[float, float]:
    """(wall, CPU) seconds for a bare smtplib loop, one thread per connection, to send `total`."""
    errors: list[BaseException] = []

    def worker(first: int, count: int) -> None:
        try:
            smtp = smtplib.SMTP("127.0.0.1", port, timeout=30)
            for n in range(count):
                if n and n % batch == 0:
                    smtp.quit()
                    smtp = smtplib.SMTP("127.0.0.1", port, timeout=30)
                smtp.sendmail(SENDER, [f"reader{first + n:06d}@example.com"], data)
            smtp.quit()
        except BaseException as exc:  # reported after the join
            errors.append(exc)

    share = [total // connections + (i < total % connections) for i in range(connections)]
    starts = [sum(share[:i]) for i in range(connections)]
    threads = [
        threading.Thread(target=worker, args=(s, c)) for s, c in zip(starts, share, strict=True)
    ]
    start, cpu = time.perf_counter(), time.process_time()  # the bench does nothing else now
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    if errors:
        raise RuntimeError(f"ceiling loop failed: {errors[0]!r}")
    return elapsed, cpu


def mailmerge_template(project: Path) -> Path:
    """A mailmerge template as big as mailer's message: the built issue's text and HTML parts."""
    html = (project / "build" / ISSUE / "email.html").read_text(encoding="utf-8")
    text = (project / "build" / ISSUE / "email.txt").read_text(encoding="utf-8")
    boundary = "mailmerge-bench-boundary"
    # ASCII headers: mailmerge hands smtplib a str, which smtplib encodes as ASCII.
    template = (
        "TO: {{email}}\n"
        "SUBJECT: NLP Newsletter #2\n"
        f"FROM: NLP Newsletter <{SENDER}>\n"
        "MIME-Version: 1.0\n"
        f'Content-Type: multipart/alternative; boundary="{boundary}"\n'
        "\n"
        f"--{boundary}\n"
        'Content-Type: text/plain; charset="utf-8"\n'
        "\n"
        "Hi {{name}},\n\n{% raw %}" + text + "{% endraw %}\n"
        f"--{boundary}\n"
        'Content-Type: text/html; charset="utf-8"\n'
        "\n"
        "<p>Hi {{name}},</p>\n{% raw %}" + html + "{% endraw %}\n"
        f"--{boundary}--\n"
    )
    path = project / "mailmerge_template.txt"
    path.write_text(template, encoding="utf-8")
    return path


def mailmerge_message_size(template: Path) -> int:
    """Bytes of one message as mailmerge sends it."""
    from mailmerge.template_message import TemplateMessage

    _, _, message = TemplateMessage(template).render(
        {"email": "reader@example.com", "name": "Reader"}
    )
    return len(str(message).encode())


def mailmerge_send(project: Path, port: int, subscribers: Path, count: int) -> float:
    """Seconds for the `mailmerge` command to send `count` messages (process start included)."""
    template = mailmerge_template(project)
    lines = subscribers.read_text(encoding="utf-8").splitlines(keepends=True)
    database = project / "mailmerge_database.csv"
    database.write_text("".join(lines[: count + 1]), encoding="utf-8")
    config = project / "mailmerge_server.conf"
    config.write_text(
        f"[smtp_server]\nhost = 127.0.0.1\nport = {port}\nsecurity = Never\nratelimit = 0\n"
    )
    run = run_process(
        [
            BIN / "mailmerge",
            "--no-limit",
            "--no-dry-run",
            "--output-format",
            "raw",
            "--template",
            template,
            "--database",
            database,
            "--config",
            config,
        ],
        cwd=project,
        stdout_to_devnull=True,  # it prints every message it sends
    )
    if run.returncode != 0:
        raise RuntimeError(f"mailmerge failed ({run.returncode}): {run.stderr[-2000:]}")
    return run.wall
