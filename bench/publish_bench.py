"""`mailer publish` with many issues: the first publish, one with nothing changed, and one after
a single issue changed. Each is the real command as a process, start-up included.

    .venv/bin/python bench/publish_bench.py [--issues 500] [--reps 3]

Half the issues were sent (the ledger dates them), half say `published: true` with a date.
The first publish renders every issue (the slow part, ~0.2 s each); later ones render only
what changed, so a one-issue change should take well under 2 s however many issues there are.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from common import MAILER, mailer_env, median, run_process

BODY = """Welcome back. This week: three papers, one tool, and a question from a reader.

## Papers

A [paper on tokenizers](https://arxiv.org/abs/2402.{n:05d}) counts what rare words cost,
and a second one asks whether leaderboards measure what we think they do.

![A chart of tokens per word](https://cdn.example.org/charts/{n}.png)

## Tools

- [sentencepiece](https://github.com/google/sentencepiece), again
- a notebook to count your own tokens

Thanks for reading; reply to tell us what to cover next.
"""


def make_issues(root: Path, count: int) -> None:
    """count issues; the even ones are recorded as sent, the odd ones say published: true."""
    from mailer.state.ledger import Ledger
    from mailer.states import DeliveryState

    (root / "issues").mkdir(parents=True)
    (root / "mailer.toml").write_text(
        'from = "Bench <news@example.org>"\nlist_id = "bench.example.org"\n'
        'archive_url = "https://news.example.org/issues"\n',
        encoding="utf-8",
    )
    with Ledger(root / ".mailer") as ledger:
        for n in range(1, count + 1):
            name = f"issue-{n:04d}"
            front = f"title: 'Issue {n}: papers, tools, a question'\npreheader: Issue {n} in brief"
            if n % 2:
                front += f"\npublished: true\ndate: {2000 + n // 365}-{n % 12 + 1:02d}-01"
            else:
                ledger.record(name, f"reader{n}@example.com", DeliveryState.SENT)
            text = f"---\n{front}\n---\n\n{BODY.format(n=n)}"
            (root / "issues" / f"{name}.md").write_text(text, encoding="utf-8")


def publish(root: Path) -> tuple[float, str]:
    run = run_process([MAILER, "publish"], cwd=root, env=mailer_env(), timeout=3600)
    if run.returncode != 0:
        sys.exit(f"mailer publish failed:\n{run.stdout}{run.stderr}")
    return run.wall, run.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--issues", type=int, default=500)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="publish-bench-") as folder:
        root = Path(folder)
        started = time.perf_counter()
        make_issues(root, args.issues)
        print(f"{args.issues} issues written in {time.perf_counter() - started:.1f} s")
        first, line = publish(root)
        print(f"first publish      {first:7.2f} s   {line}")
        same, changed = [], []
        for rep in range(args.reps):
            wall, line = publish(root)
            same.append(wall)
            assert " 0 written," in line and " 0 rendered" in line, line
            issue = root / "issues" / f"issue-{rep + 1:04d}.md"
            issue.write_text(issue.read_text(encoding="utf-8") + f"\nP.S. {rep}\n", "utf-8")
            wall, line = publish(root)
            changed.append(wall)
            assert " 1 rendered" in line, line
        print(f"nothing changed    {median(same):7.2f} s   (median of {args.reps})")
        print(f"one issue changed  {median(changed):7.2f} s   (median of {args.reps}; {line})")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
