"""A sweep's folder, claimed by one sweep at a time.

- A time-stamped folder (the default, `${paths.root}/sweeps/${now:...}`) is for a new sweep: it is
  created here, and a sweep started in the same second as another, finding the name taken, takes
  the next free one (`<time>_2`, `<time>_3`, ...) and records it as the override
  `hydra.sweep.dir=...`, so that every job's config (composed again by Hydra's launchers from the
  master's overrides) lands in it too.
- A folder named by the user (`hydra.sweep.dir=...`) is where a sweep resumes: a second sweep into
  it while the first still runs would run every job twice, and is refused with the first one's pid.

Either way the sweep holds the folder's lock (runner.outputs.locks) until it ends.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from runner.errors import UserError
from runner.outputs.locks import FolderLock

MAX_SAME_SECOND = 100  # sweeps started in one second that each get a folder of their own


class SweepFolder:
    """The folder this process's sweep claimed, and its lock."""

    def __init__(self) -> None:
        self.lock: Optional[FolderLock] = None
        self.created: List[Path] = []  # made by this claim, deepest first: removed if the sweep never starts

    def claim(self, config: DictConfig) -> Path:
        """Claim the sweep's folder for this process; returns it (see the module)."""
        self.release()
        folder = Path(str(config.hydra.sweep.dir))
        if _time_stamped(config):
            folder = self._new_folder(folder)
            if folder != Path(str(config.hydra.sweep.dir)):
                _redirect(config, folder)
        elif not folder.exists():
            self.created = _missing(folder)
            folder.mkdir(parents=True)
        lock = FolderLock(folder)
        if not lock.try_acquire():
            holder = lock.holder()
            self.unused()
            raise UserError(
                f"hydra.sweep.dir={folder} is in use: another lcm-run sweep ({holder}) is running into it, and a "
                "second sweep into the same folder would run its jobs twice. Wait for it to finish (running the "
                "same command again then resumes: finished jobs are skipped), or choose another hydra.sweep.dir.")
        self.lock = lock
        return folder

    def _new_folder(self, wanted: Path) -> Path:
        parents = _missing(wanted.parent)
        wanted.parent.mkdir(parents=True, exist_ok=True)
        for number in range(1, MAX_SAME_SECOND + 1):
            folder = wanted if number == 1 else wanted.with_name(f"{wanted.name}_{number}")
            try:
                folder.mkdir()  # atomic: of two sweeps, one makes it, the other takes the next name
            except FileExistsError:
                continue
            self.created = [folder, *parents]
            return folder
        raise UserError(f"hydra.sweep.dir: {wanted} and the {MAX_SAME_SECOND - 1} names after it are taken; "
                        "name a folder with hydra.sweep.dir=...")

    def unused(self) -> None:
        """The sweep stops before its first job: let go of the folder, and remove it if this claim
        made it and it is still empty."""
        created, self.created = self.created, []
        self.release()
        for folder in created:
            try:
                folder.rmdir()
            except OSError:  # something is in it (another sweep's folder, too): kept
                break

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def _missing(folder: Path) -> List[Path]:
    """`folder` and those of its parents that do not exist yet, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _time_stamped(config: DictConfig) -> bool:
    """Whether hydra.sweep.dir is a new folder per sweep: its value is made from `${now:...}`."""
    raw = OmegaConf.to_container(config.hydra.sweep, resolve=False).get("dir")
    return isinstance(raw, str) and "${now:" in raw


def _redirect(config: DictConfig, folder: Path) -> None:
    """Point the master config, Hydra's copy of its `hydra` node and the overrides that every job
    is composed from at `folder`."""
    override = f"hydra.sweep.dir={folder}"
    with read_write(config.hydra), open_dict(config.hydra):
        config.hydra.sweep.dir = str(folder)
        config.hydra.overrides.hydra.append(override)
    hydra = HydraConfig.instance().cfg
    if hydra is not None and hydra is not config:
        with read_write(hydra.hydra), open_dict(hydra.hydra):
            hydra.hydra.sweep.dir = str(folder)
            if override not in hydra.hydra.overrides.hydra:
                hydra.hydra.overrides.hydra.append(override)


SWEEP_FOLDER = SweepFolder()
