"""Run a command, then write its wall time and peak RSS as JSON: `spawn.py OUT.json CMD...`.

Why a separate small process: a child's ru_maxrss also counts the address space it was forked
(or vforked) from, up to its exec. Spawned straight from the bench, which holds lists and parsed
HTML, every child would report at least the bench's own size. Spawned from this script (a few
MiB), the figure is the command's own peak.
"""

import json
import os
import subprocess
import sys
import time

out, args = sys.argv[1], sys.argv[2:]
start = time.perf_counter()
proc = subprocess.Popen(args)
_, status, usage = os.wait4(proc.pid, 0)
wall = time.perf_counter() - start
code = os.waitstatus_to_exitcode(status)
with open(out, "w") as fh:
    cpu = usage.ru_utime + usage.ru_stime
    json.dump({"wall": wall, "cpu": cpu, "max_rss_kib": usage.ru_maxrss, "returncode": code}, fh)
sys.exit(code if code >= 0 else 1)
