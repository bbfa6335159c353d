"""(g) What DKIM signing costs: Composer.compose in msg/s unsigned, RSA-2048, Ed25519, both.

    .venv/bin/python bench/dkim_bench.py [--count 300] [--repeats 3]

Everything in one process, on issue-2 and generated subscribers; the keys are made fresh
(by cryptography). The four configurations run interleaved, `repeats` passes of `count`
messages each, so load from elsewhere hits them alike; the medians and
their ratios to the unsigned figure are reported. For comparison, dkimpy's own `dkim.sign`
over each finished message (Ed25519, the same header list): what mailer avoids by hashing
the issue's constant body pieces once.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ISSUE, make_project, median, write_subscribers  # noqa: E402

CONFIGS = ("unsigned", "rsa-2048", "ed25519", "rsa-2048 + ed25519")


@dataclass
class DkimFigures:
    rates: dict[str, float]  # configuration -> compose msg/s (median of the passes)
    dkimpy_sign_rate: float  # dkim.sign over finished messages (ed25519), msg/s
    count: int
    repeats: int
    message_bytes: dict[str, int]


def bench_dkim(project: Path, subscribers: Path, count: int, repeats: int = 3) -> DkimFigures:
    import base64

    import dkim

    from mailer import config
    from mailer.compose import load
    from mailer.compose.render import render
    from mailer.deliver import dkim as mdkim
    from mailer.deliver import dkim_keys
    from mailer.deliver.message import Composer
    from mailer.state.subscribers import SubscriberList

    keys = Path(tempfile.mkdtemp(prefix="mailer-bench-dkim-"))
    for name, algorithm in (("rsa", dkim_keys.RSA), ("ed25519", dkim_keys.ED25519)):
        (keys / f"{name}.pem").write_bytes(dkim_keys.generate(algorithm)[0])
    env = {"MAILER_SECRET": "bench"}
    key_env = {
        "unsigned": {},
        "rsa-2048": {"MAILER_DKIM_KEY_FILE": str(keys / "rsa.pem")},
        "ed25519": {"MAILER_DKIM_KEY_FILE": str(keys / "ed25519.pem")},
        "rsa-2048 + ed25519": {
            "MAILER_DKIM_KEY_FILE": str(keys / "rsa.pem"),
            "MAILER_DKIM_ED25519_KEY_FILE": str(keys / "ed25519.pem"),
        },
    }
    base = config.load(project, environ=env)
    email = render(load.by_name(base, ISSUE), base)
    composers = {}
    for label in CONFIGS:
        settings = config.load(project, environ={**env, **key_env[label]})
        composers[label] = Composer(email, settings, signer=mdkim.load(settings))
    people = list(SubscriberList(subscribers))[:count]
    sizes = {label: len(c.compose(people[0]).data) for label, c in composers.items()}  # warm-up

    times: dict[str, list[float]] = {label: [] for label in CONFIGS}
    naive: list[float] = []
    ed_key = (keys / "ed25519.pem").read_bytes()
    seed = base64.b64encode(dkim_keys.parse_key(ed_key)[1].private_bytes_raw())
    plain = [composers["unsigned"].compose(p).data for p in people[: max(1, count // 5)]]
    include = list(mdkim.SIGNED) + list(mdkim.OVERSIGNED)
    for _ in range(repeats):
        for label in CONFIGS:
            composer = composers[label]
            start = time.perf_counter()
            for person in people:
                composer.compose(person)
            times[label].append(len(people) / (time.perf_counter() - start))
        start = time.perf_counter()
        for data in plain:
            dkim.sign(
                data,
                b"mail",
                b"example.org",
                seed,
                signature_algorithm=b"ed25519-sha256",
                canonicalize=(b"relaxed", b"relaxed"),
                include_headers=include,
            )
        naive.append(len(plain) / (time.perf_counter() - start))
    return DkimFigures(
        rates={label: median(v) for label, v in times.items()},
        dkimpy_sign_rate=median(naive),
        count=len(people),
        repeats=repeats,
        message_bytes=sizes,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=300, help="messages per pass [300]")
    parser.add_argument("--repeats", type=int, default=3, help="passes per configuration [3]")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mailer-bench-") as tmp:
        project = make_project(Path(tmp) / "project")
        subscribers = write_subscribers(Path(tmp) / "subscribers.csv", args.count)
        f = bench_dkim(project, subscribers, args.count, args.repeats)
    unsigned = f.rates["unsigned"]
    for label in CONFIGS:
        rate = f.rates[label]
        print(
            f"{label:<20} {rate:>9,.0f} msg/s  {1e6 / rate:>8,.0f} µs/message"
            f"  x{rate / unsigned:.3f} of unsigned  ({f.message_bytes[label]:,} bytes)"
        )
    print(f"{'dkimpy dkim.sign':<20} {f.dkimpy_sign_rate:>9,.0f} msg/s  (ed25519, per message)")
    print(f"median of {f.repeats} passes of {f.count} messages each")
    return 0


if __name__ == "__main__":
    sys.exit(main())
