#!/usr/bin/env python3
"""What SBOM and provenance add to a kiln build (docs/benchmarks.md, issue 17).

Usage: bench/attestations.py KILN CONTEXT [PAIRS]

KILN_HOME must already hold CONTEXT's build (run it once). Interleaves
`kiln build -t bench:1 CONTEXT` with the default attestations and without
(`--sbom=false --provenance=false`) and prints medians and the median
paired difference, first for no-op rebuilds, then with the `sbom` and
`attestation-reuse` records deleted before each "with" run (what a cold
build pays for making and attaching them).
"""

import os
import shutil
import statistics
import subprocess
import sys
import time


def timed(cmd):
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True)
    if r.returncode != 0:
        sys.exit(r.stderr.decode())
    return (time.perf_counter() - t) * 1000


def run(kiln, ctx, pairs, fresh):
    # "with" is the default (no flag): min provenance, the SBOM on static_base()
    with_ = [kiln, "build", "--progress", "plain", "-t", "bench:1", ctx]
    without = [kiln, "build", "--progress", "plain", "-t", "bench:1", "--sbom=false", "--provenance=false", ctx]
    records = os.path.join(os.environ["KILN_HOME"], "records")
    a, b = [], []
    for _ in range(3):
        timed(with_)
        timed(without)
    for _ in range(pairs):
        if fresh:
            for r in ("sbom", "attestation-reuse"):
                shutil.rmtree(os.path.join(records, r), ignore_errors=True)
        a.append(timed(with_))
        b.append(timed(without))
    diff = statistics.median(x - y for x, y in zip(a, b))
    what = "attestations made fresh" if fresh else "no-op rebuild"
    print(f"{what}: with {statistics.median(a):.2f} ms, without {statistics.median(b):.2f} ms, "
          f"paired difference {diff:+.2f} ms (n={pairs})")


if __name__ == "__main__":
    kiln, ctx = sys.argv[1], sys.argv[2]
    pairs = int(sys.argv[3]) if len(sys.argv) > 3 else 50
    run(kiln, ctx, pairs, fresh=False)
    run(kiln, ctx, pairs, fresh=True)
