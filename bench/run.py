"""`make bench`: measure mailer, print a Markdown table, write it to bench/results/latest.md.

    .venv/bin/python bench/run.py [--count 20000] [--reps N] [--budget 270] [--skip a,b]

Sections: a render, b premailer vs css-inline, c send to smtp-sink, d memory, e per-message
costs, f ledger, g DKIM, h loopback against smtp-source -d (pipelining), i through a
delay proxy (pipelining at 50 ms RTT).

Installs nothing except that it runs bench/setup.sh (Debian's postfix, for smtp-sink) when
smtp-sink is missing. See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dkim_bench  # noqa: E402
import ledger_bench  # noqa: E402
import pipeline_bench  # noqa: E402
import process_bench  # noqa: E402
import render_bench  # noqa: E402
import send_bench  # noqa: E402
from common import (  # noqa: E402
    ISSUE,
    MAILER,
    SMTP_SINK,
    load_average,
    mailer_env,
    make_project,
    median,
    smtp_sink,
    write_subscribers,
)
from delay_proxy import check as check_proxy  # noqa: E402
from delay_proxy import delay_proxy  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "latest.md"
GOAL_CEILING = 0.7
GOAL_MAILMERGE = 10.0
GOAL_SMTP_SOURCE = 0.7  # issue 13: mailer / smtp-source -d, at 1 or 4 connections
GOAL_MAILMERGE_PIPELINED = 20.0  # issue 13
GOAL_OPTIMUM = 0.8  # issue 13: auto, depth 2 / one message per RTT per connection, 1 and 4


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def rate(value: float) -> str:
    return f"{value:,.0f} msg/s"


def rate1(value: float) -> str:
    return f"{value:,.1f} msg/s"


def goal(ratio: float, target: float) -> str:
    return f"{'met' if ratio >= target else 'NOT met'} (goal ≥ {target:g})"


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str]] = []

    def add(self, section: str, figure: str, value: str, notes: str = "") -> None:
        self.rows.append((section, figure, value, notes))
        print(f"  [{section}] {figure}: {value}  {notes}".rstrip(), file=sys.stderr, flush=True)

    def markdown(self) -> str:
        lines = ["| | figure | value | notes |", "|---|---|---|---|"]
        lines += [f"| {' | '.join(cell.replace('|', '/') for cell in row)} |" for row in self.rows]
        return "\n".join(lines)


def ensure_smtp_sink() -> bool:
    if SMTP_SINK.exists():
        return True
    print(
        "smtp-sink is missing: running bench/setup.sh (installs Debian's postfix)", file=sys.stderr
    )
    done = subprocess.run(["sh", str(HERE / "setup.sh")], check=False)
    return done.returncode == 0 and SMTP_SINK.exists()


def section_render(t: Table, project: Path, runs: int) -> render_bench.RenderFigures:
    print("(a) render of issue-2 ...", file=sys.stderr, flush=True)
    f = render_bench.bench_render(project, runs=runs)
    note = f"median of {f.runs} after a warm-up"
    t.add("a", "parse (issue.read: decode, repair, front matter, markdown-it)", ms(f.parse), note)
    for label, seconds in f.stages.items():
        t.add("a", label, ms(seconds), note)
    if f.missing:
        t.add(
            "a",
            "stages not measured",
            ", ".join(f.missing),
            "mailer.compose.render changed: update bench",
        )
    t.add("a", "render() total, in process", ms(f.total), note)
    t.add("a", "lint() of the rendered email (what `build` summarises)", ms(f.lint), note)
    cold = ", ".join(f"{s:.2f}" for s in sorted(f.cold_runs))
    t.add(
        "a",
        "`mailer build issue-2`, cold process (render, write, lint)",
        ms(f.cold_build),
        f"median of 5, process start included (runs: {cold} s)",
    )
    return f


def section_inliners(t: Table, mjml_html: str, runs: int) -> None:
    print("(b) premailer vs css-inline ...", file=sys.stderr, flush=True)
    b = render_bench.bench_inliners(mjml_html, runs=runs)
    t.add(
        "b",
        f"inline CSS: premailer {b.premailer_version} (mailer's inline_css)",
        ms(b.premailer_s),
        f"median of {runs}, on MJML's output ({len(mjml_html.encode()) / 1024:.0f} KB)",
    )
    t.add(
        "b",
        f"inline CSS: css-inline {b.css_inline_version} (keep_style_tags, no remote)",
        ms(b.css_inline_s),
        f"median of {runs * 5}; {b.premailer_s / b.css_inline_s:.0f}x faster",
    )
    examples = "; ".join(b.examples)
    t.add(
        "b",
        "elements whose style attribute differs",
        f"{b.style_differs} of {b.elements}",
        "normalised: declarations split, spaces stripped, sorted; "
        f"{b.style_differs_semantic} still differ once 0px/0pt = 0 and #fff = #ffffff; "
        f"styled elements {b.styled_premailer} vs {b.styled_css_inline}. {examples}",
    )
    imp_in, imp_p, imp_c = b.media_important

    def media_note(same: bool, important: int) -> str:
        if same:
            return "unchanged"
        return f"rewritten, !important {imp_in} -> {important}"

    t.add(
        "b",
        "@media rules kept (of MJML's)",
        f"premailer {b.media_premailer}/{b.media_in}, css-inline {b.media_css_inline}/{b.media_in}",
        f"premailer: {media_note(b.media_premailer_same, imp_p)}; "
        f"css-inline: {media_note(b.media_css_inline_same, imp_c)}",
    )
    t.add(
        "b",
        "<style> blocks kept (of MJML's)",
        f"premailer {b.style_tags_premailer}/{b.style_tags}, "
        f"css-inline {b.style_tags_css_inline}/{b.style_tags}",
        "premailer drops the blocks it fully inlined",
    )
    t.add(
        "b",
        "img width attributes altered",
        f"premailer {b.img_width_altered_premailer}/{b.img_total}, "
        f"css-inline {b.img_width_altered_css_inline}/{b.img_total}",
        "mailer's premailer call disables width/height/bgcolor/align/valign attributes",
    )
    t.add(
        "b",
        "other attributes added/changed/removed",
        f"premailer {len(b.other_attr_diffs_premailer)}, "
        f"css-inline {len(b.other_attr_diffs_css_inline)}",
        "; ".join((b.other_attr_diffs_premailer + b.other_attr_diffs_css_inline)[:3]),
    )
    t.add(
        "b",
        "HTML size after inlining",
        f"premailer {b.bytes_premailer / 1024:.1f} KB, "
        f"css-inline {b.bytes_css_inline / 1024:.1f} KB",
        "",
    )


def section_per_message(t: Table, project: Path, subscribers: Path, count: int) -> None:
    print("(e) per-message costs ...", file=sys.stderr, flush=True)
    p = process_bench.per_message(project, subscribers, count)
    t.add(
        "e",
        "Composer.compose",
        f"{p.compose_us:.1f} µs/message",
        f"{p.count:,} subscribers, median of 3 passes; message {p.message_bytes / 1024:.1f} KB",
    )
    t.add(
        "e",
        "Ledger.record",
        f"{p.record_us:.1f} µs/call",
        f"{p.count:,} calls into a fresh ledger, median of 3",
    )
    t.add("e", "SubscriberList (read + validate CSV)", f"{p.read_us:.1f} µs/row", "median of 3")
    t.add(
        "e",
        "of compose: unsubscribe_url (the signed token, in itsdangerous's format)",
        f"{p.token_us:.1f} µs/call",
        f"{p.token_us / p.compose_us:.0%} of compose",
    )
    if p.quote_us is not None:
        t.add(
            "e",
            "smtplib dot-stuffing scan (_quote_periods) of one message",
            f"{p.quote_us:.1f} µs/message",
            "inside smtplib's data(): the bare smtplib ceiling pays it, mailer does not",
        )
    t.add(
        "e",
        "mailer's dot-stuffing (transports.smtp.dot_stuff) of one message",
        f"{p.stuff_us:.1f} µs/message",
        "a compiled regex finds the lines to double; was 121 µs with bytes.replace",
    )


def section_ledger(t: Table, count: int) -> None:
    print("(f) Ledger.record ...", file=sys.stderr, flush=True)
    f = ledger_bench.bench_record(count)
    runs = f"median of {f.repeats}"
    t.add(
        "f",
        "Ledger.record, new address",
        f"{f.new_us:.1f} µs/call",
        f"{f.count:,} calls into a fresh ledger, {runs}",
    )
    t.add(
        "f",
        "Ledger.record, address already there",
        f"{f.again_us:.1f} µs/call",
        f"the same {f.count:,} addresses again (a retry's upsert), {runs}",
    )


def section_dkim(t: Table, project: Path, subscribers: Path, count: int) -> None:
    print("(g) DKIM signing ...", file=sys.stderr, flush=True)
    g = dkim_bench.bench_dkim(project, subscribers, count)
    unsigned = g.rates["unsigned"]
    for label in dkim_bench.CONFIGS:
        rate_ = g.rates[label]
        t.add(
            "g",
            f"Composer.compose, {label}",
            rate(rate_),
            f"{1e6 / rate_:,.0f} µs/message, {rate_ / unsigned:.3f} of unsigned; median of "
            f"{g.repeats} interleaved passes of {g.count:,}; "
            f"{g.message_bytes[label] / 1024:.1f} KB",
        )
    t.add(
        "g",
        "dkimpy's dkim.sign over each finished message (ed25519)",
        rate(g.dkimpy_sign_rate),
        "what the Composer's piecewise body hash avoids: re-parsing and re-canonicalising 60 KB",
    )


def section_memory(t: Table, project: Path, files: dict[int, Path]) -> None:
    print("(d) dry runs: memory against list size ...", file=sys.stderr, flush=True)
    for count, path in files.items():
        d = process_bench.dry_run(project, path, count)
        t.add(
            "d",
            f"dry run, {count:,} subscribers: peak RSS",
            f"{d.max_rss_mib:.0f} MiB",
            f"wall {d.wall:.2f} s ({d.recipients / d.wall:,.0f} msg/s, process start included)",
        )


def section_send(
    t: Table, project: Path, subscribers: Path, count: int, args: argparse.Namespace, started: float
) -> float | None:
    """Section c; returns mailmerge's msg/s (None when not measured)."""
    print("(c) sending to smtp-sink ...", file=sys.stderr, flush=True)
    data = send_bench.sample_message(project)
    batch = 1000
    mailer: dict[int, list[send_bench.SendRun]] = {1: [], 4: []}
    ceil: dict[int, list[float]] = {1: [], 4: []}
    ceil_cpu: dict[int, list[float]] = {1: [], 4: []}
    mailmerge_s: float | Exception | None = None
    with smtp_sink() as port:
        reps = 0
        while True:
            rep_started = time.monotonic()
            for n in (1, 4):
                print(f"    mailer, {n} connection(s) ...", file=sys.stderr, flush=True)
                mailer[n].append(send_bench.mailer_send(project, port, subscribers, n, batch))
                print(f"    ceiling, {n} connection(s) ...", file=sys.stderr, flush=True)
                wall, cpu = send_bench.ceiling(port, data, count, n, batch)
                ceil[n].append(count / wall)
                ceil_cpu[n].append(cpu / count)
            reps += 1
            rep_took = time.monotonic() - rep_started
            if mailmerge_s is None and args.mailmerge_count:
                print(
                    f"    mailmerge, {args.mailmerge_count} messages ...",
                    file=sys.stderr,
                    flush=True,
                )
                try:
                    mailmerge_s = send_bench.mailmerge_send(
                        project, port, subscribers, args.mailmerge_count
                    )
                except (RuntimeError, FileNotFoundError) as exc:
                    mailmerge_s = exc
            if args.reps:
                if reps >= args.reps:
                    break
            elif reps >= 3 or time.monotonic() - started + rep_took > args.budget:
                break
    note = (
        f"{count:,} messages of {len(data) / 1024:.1f} KB, batches of {batch}; "
        f"median of {reps} run(s)"
    )
    for n in (1, 4):
        whole = median([r.rate for r in mailer[n]])
        loop = median([r.loop_rate for r in mailer[n]])
        c = median(ceil[n])
        t.add(
            "c",
            f"mailer send, {n} connection(s)",
            rate(whole),
            f"whole process incl. start and render; send loop alone {rate(loop)}. {note}",
        )
        t.add(
            "c",
            f"ceiling: bare smtplib, prebuilt bytes, {n} connection(s)",
            rate(c),
            f"{n} thread(s) in one process, same batches. {note}",
        )
        # Each run's mailer and ceiling ran back to back: their ratio is the figure least
        # disturbed by load from elsewhere; the median of those ratios is reported.
        ratios = [m.rate / r for m, r in zip(mailer[n], ceil[n], strict=True)]
        loop_ratios = [m.loop_rate / r for m, r in zip(mailer[n], ceil[n], strict=True)]
        ratio = median(ratios)
        t.add(
            "c",
            f"mailer / ceiling, {n} connection(s)",
            f"{ratio:.2f}",
            f"{goal(ratio, GOAL_CEILING)}; median of per-run ratios "
            f"({', '.join(f'{x:.2f}' for x in ratios)}); "
            f"send loop alone {median(loop_ratios):.2f}",
        )
        mailer_cpu = median([m.cpu / m.sent for m in mailer[n]])
        ceiling_cpu = median(ceil_cpu[n])
        t.add(
            "c",
            f"client CPU per message, {n} connection(s)",
            f"mailer {mailer_cpu * 1e6:,.0f} µs, ceiling {ceiling_cpu * 1e6:,.0f} µs",
            f"user + system, medians; ceiling / mailer = {ceiling_cpu / mailer_cpu:.2f} (the "
            "same ratio in CPU: steadier than wall time on a shared machine); mailer's includes "
            "start-up and render",
        )
    if not isinstance(mailmerge_s, float):
        t.add("c", "mailmerge", "not measured", str(mailmerge_s or "skipped (--mailmerge-count 0)"))
        return None
    from send_bench import mailmerge_message_size, mailmerge_template

    size = mailmerge_message_size(mailmerge_template(project))
    mm = float(args.mailmerge_count / mailmerge_s)
    t.add(
        "c",
        f"mailmerge {_version('mailmerge')}, 1 connection per message",
        rate(mm),
        f"{args.mailmerge_count:,} messages of {size / 1024:.1f} KB (built issue, base64), "
        "process start included, stdout to /dev/null",
    )
    for n in (1, 4):
        ratio = median([r.rate for r in mailer[n]]) / mm
        t.add(
            "c",
            f"mailer ({n} connection(s)) / mailmerge",
            f"{ratio:.1f}x",
            goal(ratio, GOAL_MAILMERGE),
        )
    return mm


def _try_send(
    project: Path, port: int, subscribers: Path, n: int, batch: int, mode: str
) -> send_bench.SendRun | str:
    """mailer send with one of pipeline_bench.MODES; the error's text if it fails or hangs
    (killed after 120 s + 10 ms a message: the slowest run here, off at 1 connection through
    the proxy, takes about 25 s)."""
    timeout = 120 + batch / 100
    try:
        return send_bench.mailer_send(
            project, port, subscribers, n, batch, pipeline_bench.MODES[mode], timeout=timeout
        )
    except RuntimeError as exc:
        print(f"    mailer {mode}, {n} connection(s) FAILED: {exc}", file=sys.stderr, flush=True)
        return " ".join(str(exc).split())[:300]


def _settings_note(runs: list[send_bench.SendRun]) -> str:
    warned = sorted({r.warnings for r in runs if r.warnings})
    return f" WARNING, settings not recognised (ran as off): {warned[0]}" if warned else ""


def section_loopback(
    t: Table, project: Path, subscribers: Path, args: argparse.Namespace, mm: float | None
) -> None:
    """Section h: smtp-source -d against mailer with pipelining off and auto (depth 2)."""
    print("(h) loopback: smtp-source -d, mailer off / auto ...", file=sys.stderr, flush=True)
    data = send_bench.sample_message(project)
    count, size = args.pipeline_count, len(data)
    modes = ("off", "auto, depth 2")
    source: dict[int, list[float]] = {1: [], 4: []}
    source_cpu: dict[int, list[float]] = {1: [], 4: []}
    # Each mailer run against the mean of the smtp-source runs just before and just after it
    # (smtp-source, off, auto, smtp-source): their ratio is the figure.
    runs: dict[tuple[str, int], list[tuple[send_bench.SendRun, float]]] = {
        (m, n): [] for m in modes for n in (1, 4)
    }
    errors: dict[tuple[str, int], str] = {}

    def source_run(n: int) -> float:
        wall, cpu = pipeline_bench.smtp_source(project, port, size, count, n)
        source[n].append(count / wall)
        source_cpu[n].append(cpu / count)
        return float(count / wall)

    with smtp_sink() as port:
        advertised = pipeline_bench.advertises_pipelining(port)
        for rep in range(args.pipeline_reps):
            for n in (1, 4):
                print(f"    rep {rep + 1}, {n} connection(s) ...", file=sys.stderr, flush=True)
                before = source_run(n)
                sends = [(m, _try_send(project, port, subscribers, n, count, m)) for m in modes]
                bracket = (before + source_run(n)) / 2
                for mode, got in sends:
                    if isinstance(got, str):
                        errors[mode, n] = got
                    else:
                        runs[mode, n].append((got, bracket))
        if mm is None and args.mailmerge_count:
            print(f"    mailmerge, {args.mailmerge_count} ...", file=sys.stderr, flush=True)
            try:
                mm = args.mailmerge_count / send_bench.mailmerge_send(
                    project, port, subscribers, args.mailmerge_count
                )
                mm_note = f"{args.mailmerge_count:,} messages, 1 connection per message"
            except (RuntimeError, FileNotFoundError) as exc:
                mm_note = str(exc)
        else:
            mm_note = "section c's figure, same run"
    t.add(
        "h",
        "smtp-sink advertises PIPELINING",
        "yes" if advertised else "NO",
        "smtp-source itself never pipelines (man page, BUGS: no SMTP command pipelining "
        "support): it waits for every reply; -d keeps the connection for the next message",
    )
    note = (
        f"{count:,} messages of {size / 1024:.1f} KB (mailer's issue-2 message), "
        f"one connection per worker for the whole run; median of {args.pipeline_reps} run(s) "
        "(smtp-source: of twice as many, one before and one after each pair of mailer runs)"
    )
    for n in (1, 4):
        src = median(source[n])
        t.add(
            "h",
            f"smtp-source -d, {n} connection(s)",
            rate(src),
            f"-s {n} -m {count} -l {pipeline_bench.smtp_source_length(size)} (about the same "
            f"bytes on the wire); client CPU {median(source_cpu[n]) * 1e6:,.0f} µs/message. "
            f"{note}",
        )
        for mode in modes:
            pairs = runs[mode, n]
            done = [r for r, _ in pairs]
            if not done:
                t.add(
                    "h",
                    f"mailer, pipelining {mode}, {n} connection(s)",
                    "FAILED",
                    errors.get((mode, n), ""),
                )
                continue
            ratios = [r.rate / src for r, src in pairs]
            loop_ratios = [r.loop_rate / src for r, src in pairs]
            per_run = ", ".join(f"{x:.2f}" for x in ratios)
            ratio = median(ratios)
            t.add(
                "h",
                f"mailer, pipelining {mode}, {n} connection(s)",
                rate(median([r.rate for r in done])),
                f"whole process; send loop alone {rate(median([r.loop_rate for r in done]))}; "
                f"client CPU {median([r.cpu / r.sent for r in done]) * 1e6:,.0f} µs/message "
                "(start-up and render included)."
                f"{_settings_note(done)}"
                + (
                    f" {len(done)} run(s) ok, one failed: {errors[mode, n]}"
                    if (mode, n) in errors
                    else ""
                ),
            )
            t.add(
                "h",
                f"mailer {mode} / smtp-source -d, {n} connection(s)",
                f"{ratio:.2f}",
                f"{goal(ratio, GOAL_SMTP_SOURCE)}; median of per-run ratios ({per_run}); "
                f"send loop alone {median(loop_ratios):.2f}",
            )
    if mm is None:
        t.add("h", "mailmerge", "not measured", mm_note)
        return
    t.add("h", f"mailmerge {_version('mailmerge')}, 1 connection", rate(mm), mm_note)
    for n in (1, 4):
        pairs = runs["auto, depth 2", n]
        if pairs:
            ratio = median([r.rate for r, _ in pairs]) / mm
            t.add(
                "h",
                f"mailer auto ({n} connection(s)) / mailmerge",
                f"{ratio:.1f}x",
                goal(ratio, GOAL_MAILMERGE_PIPELINED),
            )


def section_latency(t: Table, project: Path, lists: Path, args: argparse.Namespace) -> None:
    """Section i: mailer through the delay proxy, off / auto depth 1 / depth 2, 1/4/16 conns."""
    rtt = args.rtt
    print(f"(i) through a {rtt * 1000:.0f} ms RTT proxy ...", file=sys.stderr, flush=True)
    counts = [int(c) for c in args.latency_counts.split(",")]
    plan = dict(zip((1, 4, 16), counts, strict=True))
    data = send_bench.sample_message(project)
    greeting, ping, burst = check_proxy(rtt)
    t.add(
        "i",
        "delay proxy: ping-pong round trip",
        ms(ping),
        f"bench/delay_proxy.py, RTT {ms(rtt)} (RTT/2 each way, chunks not serialised: 3 writes "
        f"RTT/10 apart come back {ms(burst)} after the last); handshake charged by delaying "
        f"the upstream connect 1 RTT: greeting {ms(greeting)} after connect",
    )
    with smtp_sink() as sink, delay_proxy(sink, rtt) as port:
        source_n = 20
        wall, _ = pipeline_bench.smtp_source(project, port, len(data), source_n, 1)
        per = wall / rtt / source_n
        t.add(
            "i",
            "smtp-source -d, 1 connection (reference: no pipelining)",
            f"{per:.1f} RTT/message",
            f"{source_n} messages, connection setup included (about 3.5 RTT in all)",
        )
        for n, count in plan.items():
            optimum = n / rtt
            subscribers = write_subscribers(lists / f"latency-{count}.csv", count)
            t.add(
                "i",
                f"optimum, {n} connection(s): one message per RTT per connection",
                rate1(optimum),
                f"{count} messages per run below, through the proxy; setup (about 3.5 RTT a "
                f"connection) caps a perfect client at {count / n / (count / n + 3.5):.2f}",
            )
            for mode in pipeline_bench.MODES:
                print(f"    mailer {mode}, {n} connection(s) ...", file=sys.stderr, flush=True)
                got = _try_send(project, port, subscribers, n, max(count, 1000), mode)
                label = f"mailer {mode}, {n} connection(s)"
                if isinstance(got, str):
                    t.add("i", label, "FAILED", got)
                    continue
                ratio = got.loop_rate / optimum
                target = mode == "auto, depth 2" and n in (1, 4)
                t.add(
                    "i",
                    label,
                    f"{rate1(got.loop_rate)}, {ratio:.2f} of optimum",
                    (goal(ratio, GOAL_OPTIMUM) + "; " if target else "")
                    + f"send loop (mailer's own time, connections included); whole process "
                    f"{rate1(got.rate)}.{_settings_note([got])}",
                )
            wall = pipeline_bench.ideal_client_process(project, port, data, count, n)
            t.add(
                "i",
                f"bare pipelining client (depth 2, asyncio), {n} connection(s)",
                f"{rate1(count / wall)}, {count / wall / optimum:.2f} of optimum",
                "bench/pipeline_bench.py in its own process: what the proxy lets through",
            )


def section_senders(t: Table, count: int, claims: int) -> None:
    """Section j: 1/2/4 senders sharing one list on PostgreSQL against one on SQLite."""
    import senders_bench

    reason = senders_bench.skip_reason()
    if reason:
        t.add("j", "several senders on PostgreSQL", "not measured", reason)
        return
    print(f"(j) senders on PostgreSQL, {count} messages ...", file=sys.stderr, flush=True)
    runs, figures = senders_bench.bench(count, claims)
    base = runs[0].rate
    for r in runs:
        t.add(
            "j",
            f"{r.senders} sender(s), {'PostgreSQL' if r.backend == 'postgresql' else 'SQLite'}",
            rate(r.rate),
            f"{r.sent} messages into one smtp-sink, rate off, 1 connection each, first start"
            f" to last exit; {r.rate / base:.2f} x one sender on SQLite",
        )
    t.add(
        "j",
        "claims, per reader",
        f"{figures.claim_us:.0f} µs",
        f"{figures.count} readers claimed 50 at a time, each recorded before the next claim;"
        f" laying the list out {figures.load_us:.0f} µs a reader; a record (which also leaves"
        f" the outbox) {figures.record_pg_us:.0f} µs on PostgreSQL, {figures.record_sqlite_us:.0f}"
        " µs on SQLite",
    )


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=20_000, help="messages per send run [20000]")
    parser.add_argument(
        "--mailmerge-count", type=int, default=2_000, help="messages mailmerge sends [2000]"
    )
    parser.add_argument(
        "--reps",
        type=int,
        default=0,
        help="send runs per configuration [as many as --budget allows, 1 to 3]",
    )
    parser.add_argument(
        "--budget", type=float, default=270, help="seconds the whole bench aims for [270]"
    )
    parser.add_argument("--render-runs", type=int, default=20, help="timed renders [20]")
    parser.add_argument(
        "--memory-counts",
        default="1000,10000,100000",
        help="list sizes for the dry-run memory figures [1000,10000,100000]",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="report file [%(default)s]")
    parser.add_argument(
        "--skip", default="", help="sections to skip (a-j, see bench/README.md), e.g. 'c,d'"
    )
    parser.add_argument(
        "--dkim-count", type=int, default=300, help="messages per DKIM pass (section g) [300]"
    )
    parser.add_argument(
        "--pipeline-count",
        type=int,
        default=10_000,
        help="messages per run in section h (smtp-source -d vs mailer) [10000]",
    )
    parser.add_argument(
        "--pipeline-reps", type=int, default=2, help="runs per configuration in section h [2]"
    )
    parser.add_argument(
        "--rtt", type=float, default=0.05, help="round-trip time of section i's proxy, s [0.05]"
    )
    parser.add_argument(
        "--latency-counts",
        default="100,200,400",
        help="messages per run in section i at 1,4,16 connections [100,200,400]",
    )
    parser.add_argument(
        "--senders-count", type=int, default=4000, help="messages per run in section j [4000]"
    )
    parser.add_argument(
        "--claims-count", type=int, default=20000, help="readers claimed in section j [20000]"
    )
    args = parser.parse_args()
    skip = set(args.skip.replace(" ", "").split(","))

    started = time.monotonic()
    load_before = load_average()
    t = Table()
    with tempfile.TemporaryDirectory(prefix="mailer-bench-") as tmp:
        project = make_project(Path(tmp) / "project")
        lists = Path(tmp) / "lists"
        lists.mkdir()
        memory_counts = [int(n) for n in args.memory_counts.split(",") if n]
        counts = {args.count, *memory_counts}
        if "h" not in skip:
            counts.add(args.pipeline_count)
        files = process_bench.subscriber_files(lists, sorted(counts))
        mjml_html = None
        if "a" not in skip or "b" not in skip:
            mjml_html = section_render(t, project, args.render_runs).mjml_html
        if "b" not in skip and mjml_html:
            section_inliners(t, mjml_html, args.render_runs)
        if "e" not in skip:
            section_per_message(t, project, files[args.count], args.count)
        if "f" not in skip:
            section_ledger(t, args.count)
        if "g" not in skip:
            section_dkim(t, project, files[args.count], min(args.dkim_count, args.count))
        if "d" not in skip:
            section_memory(t, project, {n: files[n] for n in memory_counts})
        mailmerge_rate = None
        sending = [x for x in ("c", "h", "i", "j") if x not in skip]
        if sending and not ensure_smtp_sink():
            for x in sending:
                t.add(x, "sending to smtp-sink", "not measured", "smtp-sink missing, setup failed")
            sending = []
        if sending and "a" in skip:  # mailmerge's template is the built issue
            subprocess.run(
                [MAILER, "build", ISSUE],
                cwd=project,
                env=mailer_env(),
                capture_output=True,
                check=True,
            )
        if "c" in sending:
            mailmerge_rate = section_send(t, project, files[args.count], args.count, args, started)
        if "h" in sending:
            section_loopback(t, project, files[args.pipeline_count], args, mailmerge_rate)
        if "i" in sending:
            section_latency(t, project, lists, args)
        if "j" in sending:
            section_senders(t, args.senders_count, args.claims_count)
    took = time.monotonic() - started
    head = (
        f"# mailer bench, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n\n"
        f"{socket.gethostname()}: {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"load average before {load_before}, after {load_average()}; the bench took {took:.0f} s.\n"
        "Other processes share the machine: compare figures within one run (ratios), "
        "not across runs.\n"
    )
    report = f"{head}\n{t.markdown()}\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report, encoding="utf-8")
    print(report)
    print(f"(written to {args.out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
