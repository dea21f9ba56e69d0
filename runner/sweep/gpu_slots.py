"""One GPU per process: which CUDA device a worker uses when a launcher runs several at once.

With `device.type=auto` and more than one CUDA GPU, each process takes one GPU for its whole life
(runner.engine.models.resolve_device asks here once; the answer never changes in that process), so that the
base model it keeps in the process cache (runner.engine.state) stays on one GPU and the workers of a
launcher (`hydra/launcher=gpus`: one joblib/loky worker per GPU) share the GPUs out between them.

How: a process claims the lowest free *slot* by taking an exclusive `fcntl.flock` on a lock file per
GPU in a folder of the temp dir, and keeps the file open, hence the lock held, until it exits (the
kernel drops the lock then, even after a kill -9). When every slot is held (more workers than GPUs),
it falls back to `pid % count`. Lock files are named by the GPU's CUDA_VISIBLE_DEVICES entry when
that lists the GPUs, so processes that see different subsets of the same machine's GPUs still agree.

Torch-free: the GPU count comes from the caller (runner.engine.models, or a test standing in for torch).
Also registers the `${gpus:}` resolver (the visible CUDA GPU count) used by conf/hydra/launcher/.
"""
from __future__ import annotations

import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, List, Optional

from omegaconf import OmegaConf

log = logging.getLogger("lcm-run")

ENV_VAR = "LCM_RUNNER_GPU_SLOTS"  # folder for the lock files (default: <tmp>/lcm-runner-gpu-slots-<uid>)


@dataclass
class _Claim:
    pid: int
    count: int
    slot: int
    handle: Optional[IO[str]]  # the open lock file that holds the slot; None for the pid fallback


_claim: Optional[_Claim] = None


def lock_dir() -> Path:
    configured = os.environ.get(ENV_VAR)
    if configured:
        return Path(configured)
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    return Path(tempfile.gettempdir()) / f"lcm-runner-gpu-slots-{uid}"


def claim(count: int) -> int:
    """This process's GPU slot in range(count): the same on every call in one process."""
    global _claim
    if count < 1:
        raise ValueError(f"claim needs at least one GPU, got count={count}")
    pid = os.getpid()
    if _claim is not None and _claim.pid == pid and _claim.count == count:
        return _claim.slot
    if _claim is not None and _claim.pid == pid:  # the count changed: give the old slot back first
        release()
    # A forked child inherits its parent's claim (and its lock): it claims a slot of its own.
    _claim = _lowest_free_slot(count, pid) or _Claim(pid, count, pid % count, None)
    if _claim.handle is None:
        log.info("all %d GPU slots are held by other processes: this one shares GPU %d (pid %% %d)",
                 count, _claim.slot, count)
    else:
        log.info("this process takes GPU %d of %d for its lifetime", _claim.slot, count)
    return _claim.slot


def held_slot() -> Optional[int]:
    """The slot this process holds, if it claimed one."""
    return _claim.slot if _claim is not None and _claim.pid == os.getpid() else None


def release() -> None:
    """Give this process's slot back (the process exiting does the same)."""
    global _claim
    if _claim is not None and _claim.pid == os.getpid() and _claim.handle is not None:
        _claim.handle.close()
    _claim = None


def _lowest_free_slot(count: int, pid: int) -> Optional[_Claim]:
    try:
        import fcntl
    except ImportError:  # no flock (Windows): the pid fallback
        return None
    folder = lock_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    for slot, name in enumerate(device_names(count)):
        try:
            handle = open(folder / f"gpu-{name}.lock", "a+", encoding="utf-8")
        except OSError:
            continue
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held by a live process
            handle.close()
            continue
        handle.seek(0)
        handle.truncate()
        handle.write(f"{pid}\n")  # for people looking: who holds this GPU
        handle.flush()
        return _Claim(pid, count, slot, handle)
    return None


def device_names(count: int) -> List[str]:
    """A stable name per visible GPU: its CUDA_VISIBLE_DEVICES entry, or its index."""
    visible = [entry.strip() for entry in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if entry.strip()]
    names = visible if len(visible) == count else [str(index) for index in range(count)]
    return [re.sub(r"[^A-Za-z0-9_.-]", "_", name) for name in names]


def cuda_gpu_count() -> int:
    """How many CUDA GPUs torch sees here (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _gpus(at_least: int = 0) -> int:
    """`${gpus:}`: how many CUDA GPUs are visible here; `${gpus:1}`: at least 1 (one worker per GPU,
    and one on a machine without any)."""
    return max(int(at_least), cuda_gpu_count())


OmegaConf.register_new_resolver("gpus", _gpus, replace=True)
