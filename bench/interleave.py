#!/usr/bin/env python3
"""Times several commands in interleaved rounds and writes hyperfine's JSON shape.

    bench/interleave.py --runs N --warmup W --export-json OUT -n NAME CMD [-n NAME CMD ...]

hyperfine times each command in one block: when the host's speed drifts (other work, a busy
neighbour, thermal limits), every command's block sees a different host and the ratios between
them carry the drift. Here every round runs each command once, the order rotating from round
to round, so a slow stretch of the host hits all of them alike and the ratios of the medians
hold. Each timed run follows `--prime` untimed runs of the same command (default 1), so that what
the previous command left ending in the background (a VM's QEMU exiting, say) and a cold
cache land there, not in the timed run. Commands run
without a shell (split as a shell would split them, no expansion), their
output discarded; a command that fails is counted and reported (as `hyperfine -i`: its time
still counts), never hidden.

The JSON has, per command: command (its name), median, mean, stddev, min, max (seconds),
times, and failures.
"""

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, required=True)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--prime", type=int, default=1,
                   help="untimed runs of the same command right before each timed one, so "
                        "that what the previous command left ending in the background (a "
                        "VM's QEMU exiting) lands there, not in this command's time")
    p.add_argument("--export-json", required=True)
    p.add_argument("-n", "--name", nargs=2, action="append", metavar=("NAME", "CMD"),
                   required=True, dest="commands")
    a = p.parse_args(argv)
    if a.runs < 1:
        p.error("--runs must be at least 1")
    return a


def once(cmd):
    """Wall time of one run of `cmd` (a list), and whether it exited 0."""
    t0 = time.perf_counter()
    rc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL, check=False).returncode
    return time.perf_counter() - t0, rc == 0


def main(argv):
    a = parse(argv)
    names = [n for n, _ in a.commands]
    if len(set(names)) != len(names):
        sys.exit("interleave: two commands have the same name")
    cmds = [shlex.split(c) for _, c in a.commands]
    for _ in range(a.warmup):
        for c in cmds:
            once(c)
    times = [[] for _ in cmds]
    failures = [0 for _ in cmds]
    k = len(cmds)
    for r in range(a.runs):
        for j in range(k):
            i = (r + j) % k  # rotate which command goes first
            for _ in range(a.prime):
                once(cmds[i])
            t, ok = once(cmds[i])
            times[i].append(t)
            failures[i] += 0 if ok else 1
    results = []
    for name, ts, f in zip(names, times, failures):
        results.append({
            "command": name,
            "median": statistics.median(ts),
            "mean": statistics.fmean(ts),
            "stddev": statistics.stdev(ts) if len(ts) > 1 else 0.0,
            "min": min(ts),
            "max": max(ts),
            "times": ts,
            "failures": f,
        })
        line = (f"{name}: median {statistics.median(ts) * 1000:.1f} ms, "
                f"min {min(ts) * 1000:.1f}, max {max(ts) * 1000:.1f} ({len(ts)} runs)")
        if f:
            line += f", {f} FAILED"
        print(line, file=sys.stderr)
    with open(a.export_json, "w") as out:
        json.dump({"results": results, "interleaved": True}, out, indent=1)


if __name__ == "__main__":
    main(sys.argv[1:])
