"""`lcm-run`: the Hydra app. Thin on purpose; the work is in runner.run.run(cfg)."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, List

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from runner.config import config_dir  # registers the structured schema before Hydra composes
import runner.sweep.gpu_slots  # noqa: F401  (registers ${gpus:}, used by conf/hydra/launcher/)
import runner.sweep.worker_env  # noqa: F401  (registers ${worker_env:}, used by conf/hydra/launcher/ray_cluster.yaml)
from runner.sweep import startup, interrupts
from runner.outputs import writers
from runner.sweep.interrupts import Interrupted
from runner.sweep.chunks import run_job
from runner.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, UserError, exit_code_after_callbacks

log = logging.getLogger("lcm-run")


@hydra.main(config_path=config_dir(), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> Any:
    hydra_cfg = HydraConfig.get()
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    # When the sweep runs in this process, its files go through the shared writer: background
    # threads beside the next job on a GPU, inline on a CPU (runner.outputs.writers), keeping thumbnails for
    # the end-of-sweep callback, which (in this process too) waits for the writes before reading.
    in_process = str(hydra_cfg.launcher.get("_target_", "")).endswith("BasicLauncher")
    try:
        writer = writers.shared(writers.threads_for(str(cfg.device.type))) if in_sweep and in_process else None
        return run_job(cfg, writer=writer)  # its record (a chunk: each point's), for the sweep's progress
    except Exception as error:
        if not in_sweep:
            raise
        # One failed job must not stop a sweep: it is recorded in its run.json, the sweep goes on,
        # and the end-of-sweep callback reports the failures and exits non-zero.
        log.error("job failed (recorded in its run.json): %s", error)


def run_app() -> None:
    """The Hydra app as `lcm-run` runs it: Hydra's start composes the config once, not twice
    (runner.sweep.startup)."""
    with startup.composed_once():
        main()


def entry() -> None:
    """The `lcm-run` console script: the Hydra app, with errors as one paragraph and a clean stop.

    Exit codes (runner.errors): 2 for bad input (config, override, file), 1 for a job that failed
    while running, 130 for Ctrl-C or SIGTERM, which abandons the job in flight (recorded as failed);
    finished jobs stay finished, and running the same command again resumes. HYDRA_FULL_ERROR=1
    shows stack traces, as in Hydra."""
    interrupts.install()
    show_traces = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra then re-raises instead of printing: shaped below
    sys.argv[1:] = with_vars_added(sys.argv[1:])
    try:
        check_group_choices(sys.argv[1:])
        exit_code_after_callbacks()  # none left from an earlier app run in this process
        run_app()
        code = exit_code_after_callbacks()  # a sweep with failed jobs, once every callback has run
        if code:
            sys.exit(code)
    except (KeyboardInterrupt, Interrupted) as stop:
        reason = "Ctrl-C" if isinstance(stop, KeyboardInterrupt) else str(stop)
        print(f"Interrupted ({reason}): finished jobs are kept and the job in flight is recorded as "
              "failed. Run the same command again to resume.", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as error:
        if show_traces:
            raise
        print(f"Error: {one_paragraph(error)}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT if isinstance(error, (HydraException, OmegaConfBaseException)) else EXIT_FAILED)


def with_vars_added(arguments: List[str]) -> List[str]:
    """`vars.NAME=...` as `++vars.NAME=...`: template variables are new keys of `vars`, which Hydra
    would otherwise want written with a `+`."""
    return [f"++{argument}" if argument.startswith("vars.") and "=" in argument else argument
            for argument in arguments]


def check_group_choices(arguments: List[str]) -> None:
    """A config group's choice must be an option's name: Hydra fails on `scheduler=0` with a bare
    ValueError that does not say which override was wrong."""
    conf = Path(config_dir())
    overrides = [a for a in arguments if "=" in a and not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException:
        return  # Hydra reports grammar errors itself
    for override in parsed:
        group = conf / override.key_or_group
        if override.is_delete() or not group.is_dir():
            continue
        value = override.value()
        for choice in _choices(getattr(value, "list", None) or [value]):
            if not isinstance(choice, str) or not choice.isprintable():  # a NUL byte crashes Hydra's file lookup
                options = ", ".join(sorted(p.stem for p in group.glob("*.yaml")))
                raise UserError(f"{override.key_or_group}={choice!r} is not an option of {override.key_or_group}: "
                                f"choose one of {options}.")


def _choices(values: List) -> List:
    """The options named: a list value selects several of a group (metrics=[clip_score,edge_f1])."""
    return [choice for value in values for choice in (value if isinstance(value, list) else [value])]


def one_paragraph(error: BaseException) -> str:
    """Hydra's and our errors, without stack, search-path listing or blank lines."""
    text = str(error).split("\nConfig search path:")[0]
    cause = error.__cause__
    if isinstance(cause, OmegaConfBaseException):  # Hydra puts what went wrong in the cause
        text = f"{text}: {str(cause).splitlines()[0]}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    options = [line for line in lines if line in _option_lines(text)]
    prose = " ".join(line for line in lines if line not in options)
    message = f"{prose} {', '.join(options)}" if options else prose
    if not isinstance(error, (UserError, HydraException)):
        message = f"{type(error).__name__}: {message} (HYDRA_FULL_ERROR=1 shows the stack trace)"
    return message


def _option_lines(text: str) -> List[str]:
    """The tab-indented option names Hydra lists under 'Available options in ...'."""
    return [line.strip() for line in text.splitlines() if line.startswith("\t")]


if __name__ == "__main__":
    entry()
