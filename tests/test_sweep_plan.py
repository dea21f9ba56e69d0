"""The sweep seen whole: every job composed as Hydra composes it (but once per config-group choice),
all bad jobs found before anything runs."""
import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.types import RunMode
from omegaconf import OmegaConf

from conftest import CONF
from runner import sweep_plan

SWEEPS = [
    ["zoo=tiny", "sampling.steps=1,2,4", "sampling.guidance_scale=0,1.5", "sampling.seed=range(0,3)"],
    ["zoo=tiny", "lora=lcm,lcm_papercut", "lora.lcm.weight=0.5,1", "fuse_lora=false"],
    ["experiment=sweep_papercut_controlnet", "zoo=tiny,hub"],
    ["experiment=t2i,lora_papercut,controlnet_canny", "zoo=tiny", "+scheduler.timestep_spacing=trailing,leading"],
    ["zoo=tiny", "scheduler=lcm,dpmpp_2m", "~lora.lcm", "sampling.prompt='a, b',c"],
    ["experiment=sweep_steps_guidance", "zoo=tiny", "sampling.steps=3"],
]


@pytest.fixture
def loader():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield GlobalHydra.instance().config_loader()


@pytest.mark.parametrize("arguments", SWEEPS, ids=[" ".join(s)[:60] for s in SWEEPS])
def test_each_job_config_equals_hydras_own_compose(arguments, loader):
    master = loader.load_configuration("config", arguments, run_mode=RunMode.MULTIRUN)
    jobs, swept = sweep_plan.expand(master)
    assert jobs and all(isinstance(job, list) for job in jobs)
    for job, fast in zip(jobs, sweep_plan.compose_jobs(master, jobs)):
        slow = loader.load_sweep_config(master, job)
        assert not isinstance(fast, Exception), fast
        assert OmegaConf.to_container(fast) == OmegaConf.to_container(slow), job
        assert OmegaConf.to_yaml(fast) == OmegaConf.to_yaml(slow), "key order too"


def test_sweeper_params_from_an_experiment_are_expanded(loader):
    master = loader.load_configuration("config", ["experiment=sweep_steps_guidance", "zoo=tiny"],
                                       run_mode=RunMode.MULTIRUN)
    jobs, swept = sweep_plan.expand(master)
    assert len(jobs) == 32 and swept == ["sampling.steps", "sampling.guidance_scale", "sampling.seed"]


def test_bad_jobs_carry_their_reason_and_good_ones_their_plan(loader):
    master = loader.load_configuration("config", ["zoo=tiny", "sampling.steps=0,4", "sampling.stepz=1,2"],
                                       run_mode=RunMode.MULTIRUN)
    jobs, _ = sweep_plan.expand(master)
    planned = sweep_plan.plan_jobs(master, jobs)
    assert all(job.error and "stepz" in job.error for job in planned)
    master = loader.load_configuration("config", ["zoo=tiny", "sampling.steps=0,4", "lora=none,nope"],
                                       run_mode=RunMode.MULTIRUN)
    jobs, _ = sweep_plan.expand(master)
    planned = sweep_plan.plan_jobs(master, jobs)
    reasons = {" ".join(job.overrides): job.error for job in planned}
    assert reasons["zoo=tiny sampling.steps=4 lora=none"] is None
    assert "sampling.steps=0" in reasons["zoo=tiny sampling.steps=0 lora=none"]
    assert "nope" in reasons["zoo=tiny sampling.steps=4 lora=nope"]
