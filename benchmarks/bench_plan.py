"""Big-sweep overheads: planning (`plan=true`) per job, and the sweeper's cost per job over an empty
task, for this checkout and, with --baseline REF, for another commit measured the same way, one
after the other on the same machine; ratios are baseline / this.

    python -m benchmarks.bench_plan [--jobs 1000 10000] [--baseline REF] [--out DIR]

Per job = (time for N jobs - time for 1 job) / (N - 1), the fixed cost of Hydra's start and of the
report taken out. CPU time of the process is reported beside wall time: on a busy machine it moves
far less. Each figure is the best of --repeats.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

SWEEPS = {  # name -> the sweep's arguments but its size, and the axis that gives it N jobs
    "seeds": (["experiment=t2i", "zoo=tiny"], "sampling.seed=range(0,{n})"),
    "prompt_rows": (["experiment=t2i", "zoo=tiny", "prompts=builtin"], "prompts.limit={rows} sampling.seed=range(0,{m})"),
}  # prompt_rows: 10 rows of the built-in set x N/10 seeds (1 x 1 for N=1)


def measure(jobs: List[int], repeats: int, work: Path) -> Dict[str, Any]:
    """{sweep: {N: {cpu_s, wall_s}}} for plan=true, and the empty-task sweeper's per-job cost."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    from benchmarks.bench import WITHOUT_RUNNER_CALLBACKS, plain_hydra_app, run_hydra
    from runner.commands.lcm_run import run_app
    from runner.zoo import ensure_zoo

    ensure_zoo()
    _quietly(run_hydra, run_app, ["experiment=t2i", "zoo=tiny", "plan=true", f"hydra.sweep.dir={work / 'warm-up'}"])
    plans: Dict[str, Dict[int, Dict[str, float]]] = {}  # (a first sweep imports and reads what the others reuse)
    for name, (arguments, axis) in SWEEPS.items():
        plans[name] = {}
        for count in [1, *jobs]:
            rows = 10 if count >= 10 else 1
            sized = axis.format(n=count, rows=rows, m=count // rows).split()
            plans[name][count] = _best(repeats, lambda: _quietly(run_hydra, run_app, [
                *arguments, "plan=true", *sized, f"hydra.sweep.dir={work / 'plan'}"]))
    empty_jobs = min(jobs)
    empty = {count: _best(repeats, lambda: _quietly(run_hydra, plain_hydra_app(lambda cfg: None), [
        "experiment=t2i", "zoo=tiny", "device=cpu", WITHOUT_RUNNER_CALLBACKS, f"sampling.seed=range(0,{count})",
        f"hydra.sweep.dir={work / f'empty-{count}-{time.monotonic_ns()}'}"])) for count in (1, empty_jobs)}
    return {"plan": {name: _per_job(times) for name, times in plans.items()},
            "empty_task": _per_job(empty)}


def _best(repeats: int, task) -> Dict[str, float]:
    best = {"cpu_s": float("inf"), "wall_s": float("inf")}
    for _ in range(repeats):
        cpu, wall = time.process_time(), time.perf_counter()
        task()
        best = {"cpu_s": min(best["cpu_s"], time.process_time() - cpu),
                "wall_s": min(best["wall_s"], time.perf_counter() - wall)}
    return best


def _quietly(run_hydra, app, overrides: List[str]) -> None:
    """A sweep in this process, its output swallowed; plan=true ends with SystemExit(0)."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            run_hydra(app, overrides)
        except SystemExit as stop:
            if stop.code not in (0, None):
                raise RuntimeError(f"the sweep {overrides} exited {stop.code}") from None


def _per_job(times: Dict[int, Dict[str, float]]) -> Dict[str, Any]:
    one = times[1]
    return {str(n): {**t, **{f"{k[:-2]}_ms_per_job": round((t[k] - one[k]) / (n - 1) * 1000, 3) for k in t}}
            for n, t in times.items() if n > 1} | {"1": one}


def _baseline(ref: str, jobs: List[int], repeats: int) -> Dict[str, Any]:
    """The same measurement on commit `ref`, in a process that imports that commit's code."""
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as folder:
        tree = Path(folder) / "tree"
        subprocess.run(["git", "-C", str(root), "worktree", "add", "--detach", str(tree), ref], check=True,
                       capture_output=True)
        try:
            env = dict(os.environ, PYTHONPATH=str(tree))
            done = subprocess.run([sys.executable, __file__, "--measure-only", "--repeats", str(repeats),
                                   "--jobs", *map(str, jobs)], env=env, capture_output=True, text=True, check=True)
        finally:
            subprocess.run(["git", "-C", str(root), "worktree", "remove", "--force", str(tree)], capture_output=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _ratios(base: Dict[str, Any], this: Dict[str, Any]) -> Dict[str, Any]:
    def ratio(a: Dict[str, Any], b: Dict[str, Any]) -> Dict[str, float]:
        return {k: round(a[k] / b[k], 1) for k in a if k.endswith("per_job") and b.get(k)}
    return {"plan": {name: {n: ratio(base["plan"][name][n], this["plan"][name][n]) for n in this["plan"][name] if n != "1"}
                     for name in this["plan"]},
            "empty_task": {n: ratio(base["empty_task"][n], this["empty_task"][n]) for n in this["empty_task"] if n != "1"}}


def main(argv: List[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", help="a commit to measure the same way, for ratios")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--measure-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        this = measure(args.jobs, args.repeats, Path(work))
    if args.measure_only:
        print(json.dumps(this))
        return
    result: Dict[str, Any] = {"this": this}
    if args.baseline:
        result["baseline"] = {"ref": args.baseline, **_baseline(args.baseline, args.jobs, args.repeats)}
        result["ratios"] = _ratios(result["baseline"], this)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_plan.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
