"""Precompute the runs of the chapter "Training on IMC, live" (book/data/train_grid.json).

The one reproducible command for that file. What a point trains, how it is priced and the grid
itself live in the package (:mod:`imckit.train_grid`), so the chapter's live mode retrains a
point with exactly the code that produced the stored one. Every run is seeded and trains with one
torch thread; the file does not depend on ``--n-jobs`` (only its ``wall_s`` fields do).

Usage (from the repository root; about 10 minutes on a 2-core x86 CPU with ``--n-jobs 2``)::

    .venv/bin/python experiments/train_grid.py --n-jobs 2     # writes book/data/train_grid.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from imckit import train_grid


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="book/data/train_grid.json")
    ap.add_argument("--n-jobs", type=int, default=1,
                    help="worker processes, one torch thread each (default 1)")
    args = ap.parse_args(argv)
    out = train_grid.run_grid(n_jobs=args.n_jobs, log=lambda line: print(line, flush=True))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    # One run per line: small diffs when the file is regenerated, and a compact file.
    runs = {k: out.pop(k) for k in ("baselines", "points")}
    head = json.dumps(out, indent=1)[:-2]
    body = ",\n".join(f' "{kind}": {{\n' + ",\n".join(
        f"  {json.dumps(key)}: {json.dumps(run, separators=(',', ':'))}" for key, run in
        items.items()) + "\n }" for kind, items in runs.items())
    Path(args.out).write_text(head + ",\n" + body + "\n}\n")
    json.loads(Path(args.out).read_text())          # the file must parse
    print(f"wrote {args.out} in {out['wall_s']:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
