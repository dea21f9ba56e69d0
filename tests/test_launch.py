"""runner.sweep.launch.run_job against Hydra's own run_job, in one process, job by job: the same folder,
the same `.hydra/` bytes, the same task config, HydraConfig, working directory, log file,
callbacks and JobReturn."""
import os
import shutil

import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobStatus, configure_log, run_job, setup_globals
from hydra.types import HydraContext, RunMode
from omegaconf import OmegaConf, open_dict

from tests.helpers import CONF
from runner.sweep import launch, expansion

SWEEPS = [
    ["zoo=tiny", "sampling.steps=1,2", "lora=lcm,none", "sampling.prompt=a fox,'ein Fuchs, müde'"],
    ["experiment=t2i", "zoo=tiny", "sampling.seed=range(0,3)", "hydra.job.chdir=true", "+sampling.extra=x"],
    ["zoo=tiny", "~lora.lcm", "sampling.seed=0,1", "+hydra.job.env_set.LCM_TEST_VAR=yes"],
    ["experiment=t2i", "zoo=tiny", "sampling={steps: 2}", "sampling.seed=0,1", "+hydra.job.env_set.LCM_TEST_VAR=no"],
]


class Recorder:
    """Hydra's Callbacks interface, recording what each job showed it."""

    def __init__(self):
        self.seen = []

    def on_job_start(self, config, task_function):
        self.seen.append(("start", OmegaConf.to_yaml(config), os.environ.get("LCM_TEST_VAR")))

    def on_job_end(self, config, job_return):
        self.seen.append(("end", OmegaConf.to_yaml(config), job_return.status, repr(job_return._return_value),
                          job_return.overrides, OmegaConf.to_yaml(job_return.hydra_cfg)))


def task(cfg):
    """What a task can see: its config, HydraConfig (resolved through it), the working directory."""
    hydra = HydraConfig.get()
    if cfg.sampling.seed == 1:
        raise ValueError("job with seed 1 fails")
    return (OmegaConf.to_yaml(cfg), OmegaConf.to_yaml(cfg, resolve=True), OmegaConf.to_yaml(hydra), hydra.sweep.dir,
            hydra.runtime.output_dir, os.getcwd(), os.environ.get("LCM_TEST_VAR"))


def folder_bytes(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("arguments", SWEEPS, ids=[" ".join(s)[:50] for s in SWEEPS])
def test_lean_run_job_equals_hydras(arguments, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        setup_globals()
        master = loader.load_configuration("config", [*arguments, f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                                           run_mode=RunMode.MULTIRUN)
        jobs, _ = expansion.expand(master)
        composed = list(expansion.compose_jobs(master, jobs))
        statuses = set()
        for number, (overrides, job) in enumerate(zip(jobs, composed)):
            hydras, ours = Recorder(), Recorder()
            config = loader.load_sweep_config(master, overrides)
            with open_dict(config):
                config.hydra.job.id = config.hydra.job.num = number
            stock = run_job(task, config, "hydra.sweep.dir", "hydra.sweep.subdir", HydraContext(loader, hydras))
            folder = tmp_path / "sweep" / str(number)
            expected = folder_bytes(folder)
            shutil.rmtree(folder)
            lean = launch.run_job(HydraContext(loader, ours), task, job, number)

            assert folder_bytes(folder) == expected, "the same files, byte for byte (log and .hydra/*.yaml)"
            assert os.getcwd() == str(tmp_path)
            assert (lean.status, lean.overrides, lean.working_dir, lean.task_name) == \
                   (stock.status, stock.overrides, stock.working_dir, stock.task_name)
            assert OmegaConf.to_yaml(lean.cfg) == OmegaConf.to_yaml(stock.cfg)
            assert OmegaConf.to_yaml(lean.hydra_cfg) == OmegaConf.to_yaml(stock.hydra_cfg)
            assert repr(lean._return_value) == repr(stock._return_value)
            assert ours.seen == hydras.seen, "callbacks see the same config and JobReturn"
            statuses.add(stock.status)
    assert statuses == {JobStatus.COMPLETED, JobStatus.FAILED} or "seed=1" not in " ".join(arguments)


def test_jobs_run_in_a_row_set_logging_up_once_and_each_logs_to_its_own_file(tmp_path, monkeypatch):
    import logging

    monkeypatch.chdir(tmp_path)
    set_up = []
    monkeypatch.setattr(launch, "configure_log", lambda *args: set_up.append(1) or configure_log(*args))
    monkeypatch.setattr(launch, "JOB_LOGGING", launch.JobLogging())

    def logs_its_seed(cfg):
        logging.getLogger("lcm-run").info("seed %d", cfg.sampling.seed)

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        setup_globals()
        master = loader.load_configuration("config", ["zoo=tiny", "sampling.seed=range(0,3)",
                                                      f"hydra.sweep.dir={tmp_path / 'sweep'}"], run_mode=RunMode.MULTIRUN)
        jobs, _ = expansion.expand(master)
        for number, job in enumerate(expansion.compose_jobs(master, jobs)):
            launch.run_job(HydraContext(loader, Recorder()), logs_its_seed, job, number)
    logging.getLogger().handlers[0].flush()
    for number in range(3):
        lines = (tmp_path / "sweep" / str(number) / "lcm-run.log").read_text().splitlines()
        assert [line.split(" - ", 1)[1] for line in lines] == [f"seed {number}"]
    assert len(set_up) == 1, "logging set up for the first job only"
