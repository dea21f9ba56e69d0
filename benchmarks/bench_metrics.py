"""`python -m benchmarks.bench_metrics`: what per-image metrics cost a sweep.

The same tiny-zoo sweep (experiment=t2i, 8 built-in prompts x steps 2,4: 16 jobs at 256², CPU) runs
with and without `metrics=[...]`, in one process, taking turns, after a warm-up that loads the model
and the scorer; the table gives each way's best wall time (the end-of-sweep report with cells.csv and
plots included) and their ratio.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from typing import Dict, List, Optional, Sequence

from benchmarks.bench import run_hydra
from runner.commands import lcm_run

SWEEP = ["experiment=t2i", "zoo=tiny", "prompts=builtin", "prompts.limit=8", "sampling.steps=2,4"]


def measure(metric_list: str, repeats: int) -> Dict[str, List[float]]:
    ways = {"no metrics": [], f"metrics={metric_list}": [f"metrics={metric_list}"]}
    walls: Dict[str, List[float]] = {name: [] for name in ways}
    with tempfile.TemporaryDirectory() as folder:
        run_hydra(lcm_run.run_app, [*SWEEP, f"metrics={metric_list}", f"hydra.sweep.dir={folder}/warm-up"])
        for round_ in range(repeats):
            for n, (name, extra) in enumerate(ways.items()):
                started = time.perf_counter()
                run_hydra(lcm_run.run_app, [*SWEEP, *extra, f"hydra.sweep.dir={folder}/{round_}-{n}"])
                walls[name].append(time.perf_counter() - started)
    return walls


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_metrics", description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", default="[clip_score]", help="the metrics list to price (default [clip_score])")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    walls = measure(args.metrics, args.repeats)
    best = {name: min(times) for name, times in walls.items()}
    plain, scored = best.values()
    print("| sweep (16 jobs, 256², CPU) | best wall (s) |\n|---|---:|")
    for name, seconds in best.items():
        print(f"| {name} | {seconds:.2f} |")
    print(f"| ratio | {scored / plain:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
