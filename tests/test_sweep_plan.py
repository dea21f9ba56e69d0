"""The sweep seen whole: every job composed as Hydra composes it (but once per config-group choice),
all bad jobs found before anything runs."""
import copy

import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.types import RunMode
from omegaconf import OmegaConf, open_dict, read_write

from tests.helpers import CONF
from runner.sweep import expansion

SWEEPS = [
    ["zoo=tiny", "sampling.steps=1,2,4", "sampling.guidance_scale=0,1.5", "sampling.seed=range(0,3)"],
    ["zoo=tiny", "lora=lcm,lcm_papercut", "lora.lcm.weight=0.5,1", "fuse_lora=false"],
    ["experiment=sweep_papercut_controlnet", "zoo=tiny,hub"],
    ["experiment=t2i,lora_papercut,controlnet_canny", "zoo=tiny", "+scheduler.timestep_spacing=trailing,leading"],
    ["zoo=tiny", "scheduler=lcm,dpmpp_2m", "~lora.lcm", "sampling.prompt='a, b',c"],
    ["experiment=sweep_steps_guidance", "zoo=tiny", "sampling.steps=3"],
    ["experiment=lora_papercut", "zoo=tiny", "++sampling.extra=1", "sampling={steps: 2, seed: 4}",
     "lora.papercut.weight=0,0.5", "sampling.height=${sampling.width}"],
    ["zoo=tiny", "+sampling.extra=1", "sampling.steps=1,2"],
]
# sweep -> compositions beyond the master's: values alone make none (the master is the jobs' own)
COMPOSITIONS = {0: 0, 1: 2, 2: 2, 3: 3, 4: 2, 5: 0, 6: 0, 7: 1}


@pytest.fixture
def loader():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield GlobalHydra.instance().config_loader()


@pytest.mark.parametrize("arguments", SWEEPS, ids=[" ".join(s)[:60] for s in SWEEPS])
def test_each_job_config_equals_hydras_own_compose(arguments, loader):
    master = loader.load_configuration("config", arguments, run_mode=RunMode.MULTIRUN)
    jobs, swept = expansion.expand(master)
    assert jobs and all(isinstance(job, list) for job in jobs)
    for number, (job, fast) in enumerate(zip(jobs, expansion.compose_jobs(master, jobs))):
        slow = loader.load_sweep_config(master, job)
        assert not isinstance(fast, Exception), fast
        task = copy.deepcopy(slow)  # what Hydra's run_job gives the task function
        with read_write(task), open_dict(task):
            del task["hydra"]
        assert OmegaConf.to_yaml(fast.task) == OmegaConf.to_yaml(task), "values and key order"
        assert fast.task._metadata.flags == task._metadata.flags, "struct / readonly as Hydra's"
        with open_dict(slow):
            slow.hydra.job.id = slow.hydra.job.num = number
        with fast.applied(number) as config:  # the group's config, this job's values in place
            assert OmegaConf.to_yaml(config) == OmegaConf.to_yaml(slow), job
            assert OmegaConf.to_yaml(fast.group.hydra) == OmegaConf.to_yaml(OmegaConf.masked_copy(slow, "hydra"))
            assert fast.group.hydra.hydra._get_parent() is config, "interpolations into the job's config"


@pytest.mark.parametrize("number", COMPOSITIONS)
def test_jobs_making_the_command_lines_group_choices_reuse_the_master(number, loader, monkeypatch):
    master = loader.load_configuration("config", SWEEPS[number], run_mode=RunMode.MULTIRUN)
    jobs, _ = expansion.expand(master)
    composed = []
    compose = loader.load_sweep_config
    monkeypatch.setattr(loader, "load_sweep_config", lambda *args: composed.append(1) or compose(*args))
    groups = {id(job.group) for job in expansion.compose_jobs(master, jobs)}
    assert len(composed) == COMPOSITIONS[number] and len(groups) == max(1, COMPOSITIONS[number])


def test_a_group_config_is_put_back_after_each_job(loader):
    master = loader.load_configuration("config", ["zoo=tiny", "+sampling.extra=1,2", "~lora.lcm", "sampling.steps=3"],
                                       run_mode=RunMode.MULTIRUN)
    jobs, _ = expansion.expand(master)
    composed = list(expansion.compose_jobs(master, jobs))
    group = composed[0].group
    assert all(job.group is group for job in composed)
    def outside_hydra():
        return [(key, value) for key, value in OmegaConf.to_container(group.config).items() if key != "hydra"]

    untouched = outside_hydra()
    for number, job in enumerate(composed):
        with job.applied(number) as config:
            assert config.sampling.extra == number + 1 and "lcm" not in config.lora and config.sampling.steps == 3
    assert outside_hydra() == untouched


def test_sweeper_params_from_an_experiment_are_expanded(loader):
    master = loader.load_configuration("config", ["experiment=sweep_steps_guidance", "zoo=tiny"],
                                       run_mode=RunMode.MULTIRUN)
    jobs, swept = expansion.expand(master)
    assert len(jobs) == 32 and swept == ["sampling.steps", "sampling.guidance_scale", "sampling.seed"]


def test_bad_jobs_carry_their_reason_and_good_ones_their_plan(loader):
    master = loader.load_configuration("config", ["zoo=tiny", "sampling.steps=0,4", "sampling.stepz=1,2"],
                                       run_mode=RunMode.MULTIRUN)
    jobs, _ = expansion.expand(master)
    planned = expansion.plan_jobs(master, jobs)
    assert all(job.error and "stepz" in job.error for job in planned)
    master = loader.load_configuration("config", ["zoo=tiny", "sampling.steps=0,4", "lora=none,nope"],
                                       run_mode=RunMode.MULTIRUN)
    jobs, _ = expansion.expand(master)
    planned = expansion.plan_jobs(master, jobs)
    reasons = {" ".join(job.overrides): job.error for job in planned}
    assert reasons["zoo=tiny sampling.steps=4 lora=none"] is None
    assert "sampling.steps=0" in reasons["zoo=tiny sampling.steps=0 lora=none"]
    assert "nope" in reasons["zoo=tiny sampling.steps=4 lora=nope"]


def test_a_group_left_missing_fails_each_job_as_in_hydra(tmp_path):
    """A multirun's master skips a group default left `???`; each job's composition refuses it."""
    (tmp_path / "db").mkdir()
    (tmp_path / "config.yaml").write_text("defaults:\n  - db: ???\n  - _self_\nx: 1\n")
    (tmp_path / "db" / "mysql.yaml").write_text("a: 1\n")
    with initialize_config_dir(config_dir=str(tmp_path), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        for arguments, fails in ((["x=2,3"], True), (["db=mysql", "x=2,3"], False)):
            master = loader.load_configuration("config", arguments, run_mode=RunMode.MULTIRUN)
            jobs = [["x=2"], ["x=3"]] if fails else [["db=mysql", "x=2"], ["db=mysql", "x=3"]]
            for job, fast in zip(jobs, expansion.compose_jobs(master, jobs)):
                if fails:
                    with pytest.raises(Exception, match="You must specify 'db'"):
                        loader.load_sweep_config(master, job)
                    assert "You must specify 'db'" in str(fast)
                else:
                    slow = loader.load_sweep_config(master, job)
                    with open_dict(slow):
                        slow.hydra.job.id = slow.hydra.job.num = 0
                    with fast.applied(0) as config:
                        assert OmegaConf.to_yaml(config) == OmegaConf.to_yaml(slow)


TEMPLATED = [
    ["zoo=tiny", "sampling.prompt='a photo of ${vars.subject}'", "++vars.subject=cat,dog", "sampling.seed=0,1"],
    ["zoo=tiny", "prompts=builtin", "prompts.limit=3", "sampling.seed=0,1", "sampling.guidance_scale=0,1"],
    ["experiment=inpaint", "zoo=tiny", "conditioning.strength=0.5,1", "sampling.num_images=1,2"],
]


@pytest.mark.parametrize("arguments", SWEEPS + TEMPLATED, ids=[" ".join(s)[:60] for s in SWEEPS + TEMPLATED])
def test_each_jobs_plain_values_equal_its_composed_config_resolved(arguments, loader):
    """Planning reads each job's values as plain data made from its group's (runner.sweep.job_values):
    they equal the job's own config, as Hydra composes it, resolved."""
    from runner.config.plain import as_plain, to_builtin

    master = loader.load_configuration("config", arguments, run_mode=RunMode.MULTIRUN)
    jobs, _ = expansion.expand(master)
    for job, fast in zip(jobs, expansion.compose_jobs(master, jobs)):
        task = copy.deepcopy(loader.load_sweep_config(master, job))
        with read_write(task), open_dict(task):
            del task["hydra"]
        assert to_builtin(fast.resolved) == to_builtin(as_plain(task)), job


def test_value_sweeps_take_the_quick_path_and_refusals_the_exact_one(loader, monkeypatch):
    """Seeds, steps, guidance, templates and prompt rows never copy a config; a value the schema
    refuses goes the exact way and reads as Hydra words it."""
    from runner.sweep.job_values import GroupValues

    def exact(*args):
        raise AssertionError("took the exact path")

    for arguments in (SWEEPS[0], *TEMPLATED):
        master = loader.load_configuration("config", arguments, run_mode=RunMode.MULTIRUN)
        jobs, _ = expansion.expand(master)
        with monkeypatch.context() as patch:
            patch.setattr(GroupValues, "exact", exact)
            assert all(job.resolved for job in expansion.compose_jobs(master, jobs))
    master = loader.load_configuration("config", ["zoo=tiny", "sampling.steps=4,four"], run_mode=RunMode.MULTIRUN)
    jobs, _ = expansion.expand(master)
    planned = expansion.plan_jobs(master, jobs)
    assert planned[0].error is None and "sampling.steps=four" in planned[1].error


@pytest.mark.parametrize("text", ["sampling.seed=0", "sampling.seed=17", "a_b.c1=-42", "seed=1234567890123"])
def test_integer_overrides_are_built_as_hydras_parser_builds_them(text):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    assert vars(expansion.OverrideParsing(parser)([text])[0]) == vars(parser.parse_overrides([text])[0])


@pytest.mark.slow
def test_a_ten_thousand_job_sweep_is_planned_whole(loader):
    """Every job of a 10,000-job sweep planned, each with its own seed (no timing asserted:
    benchmarks.bench_plan measures it)."""
    master = loader.load_configuration("config", ["zoo=tiny", "sampling.seed=range(0,10000)"],
                                       run_mode=RunMode.MULTIRUN)
    jobs, _ = expansion.expand(master)
    planned = expansion.plan_jobs(master, jobs)
    assert len(planned) == 10000 and not [job for job in planned if job.error]
    assert [job.plan.seeds[0] for job in planned] == list(range(10000))
    assert [job.number for job in planned] == list(range(10000))
