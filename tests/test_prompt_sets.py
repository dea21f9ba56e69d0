"""Prompt sets (prompts=file|builtin, one job per row on the sweep axis `prompt`) and prompt
templates (`${vars.NAME}` swept with vars.NAME=a,b)."""
import json
import re
from pathlib import Path

import pytest
from PIL import Image

from runner.commands.lcm_run import with_vars_added
from runner.config import job_identity, prompt_sets
from runner.config.job_plan import plan_job
from runner.config.prompt_sets import prompt_rows
from runner.errors import UserError
from runner.sweep.expansion import with_prompt_axis
from tests.helpers import lcm_run, make_config

SMALL = ["zoo=tiny", "sampling.height=64", "sampling.width=64", "sampling.steps=1"]


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def ids_and_prompts(rows):
    return [(row.id, row.prompt) for row in rows]


# -- reading a set ------------------------------------------------------------------------------
def test_a_text_file_is_one_prompt_a_line_numbered_by_its_line(tmp_path):
    path = write(tmp_path, "p.txt", "# a comment\na red fox\n\n  a blue bird  \n")
    assert ids_and_prompts(prompt_rows("file", path)) == [("2", "a red fox"), ("4", "a blue bird")]


def test_partiprompts_tsv_is_read_as_published(tmp_path):
    path = write(tmp_path, "parti.tsv", "Prompt\tCategory\tChallenge\tNote\n"
                                        "bond\tAbstract\tBasic\t\n"
                                        "a photo of a cat\tAnimals\tBasic\tnote, with a comma\n")
    rows = prompt_rows("file", path)
    assert [(r.id, r.prompt, r.category) for r in rows] == [("1", "bond", "Abstract"), ("2", "a photo of a cat", "Animals")]


def test_csv_and_jsonl_carry_id_category_and_negative_prompt(tmp_path):
    csv_path = write(tmp_path, "p.csv", 'ID,PROMPT,category,negative_prompt\nfox,"a fox, running",animals,blurry\n'
                                        ",a plain vase,objects,\n")
    rows = prompt_rows("file", csv_path)
    assert rows[0] == prompt_sets.PromptRow("fox", "a fox, running", "animals", "blurry")
    assert rows[1] == prompt_sets.PromptRow("2", "a plain vase", "objects", None), "no id: the row number"
    jsonl = write(tmp_path, "p.jsonl", '{"prompt": "a fox", "id": 7}\n\n{"Prompt": "a vase", "negative_prompt": "dark"}\n')
    assert prompt_rows("file", jsonl) == [prompt_sets.PromptRow("7", "a fox"),
                                          prompt_sets.PromptRow("3", "a vase", None, "dark")]


@pytest.mark.parametrize("name,text,fragments", [
    ("none.csv", "id,text\n1,a fox\n", ["none.csv, line 1", "no `prompt` column", "id, text"]),
    ("empty.txt", "\n# only a comment\n", ["empty.txt holds no prompt"]),
    ("blank.tsv", "prompt\tcategory\na fox\tanimals\n\tobjects\n", ["blank.tsv, line 3", "prompt is missing or empty"]),
    ("bad.jsonl", '{"prompt": "a fox"}\n{"prompt": \n', ["bad.jsonl, line 2", "not valid JSON"]),
    ("list.jsonl", '["a fox"]\n', ["list.jsonl, line 1", "JSON object"]),
    ("twice.csv", "id,prompt\nx,a fox\ny,a vase\nx,a bird\n", ["rows 1 and 3 have the same id 'x'"]),
    ("wide.csv", "prompt\na,b\n", ["wide.csv, line 2", "2 fields where the header has 1"]),
])
def test_a_bad_file_gets_one_error_naming_the_file_and_line(tmp_path, name, text, fragments):
    with pytest.raises(UserError) as raised:
        prompt_rows("file", write(tmp_path, name, text))
    for fragment in fragments:
        assert fragment in str(raised.value)


@pytest.mark.parametrize("overrides,fragment", [
    ((), "prompts=file needs prompts.path"),
    (("prompts.path=missing.tsv",), "prompts.path='missing.tsv' does not exist"),
    (("prompts.path=prompts.xlsx",), "is not a prompt file lcm-run reads"),
])
def test_a_bad_prompts_path_is_named(overrides, fragment):
    cfg = make_config("prompts=file", *overrides)
    with pytest.raises(UserError, match=fragment.replace("(", r"\(").replace(".", r"\.")):
        with_prompt_axis(cfg, [])


def test_limit_and_sample_are_deterministic_and_keep_ids(tmp_path):
    path = write(tmp_path, "p.txt", "".join(f"prompt {n}\n" for n in range(1, 21)))
    assert [r.id for r in prompt_rows("file", path, limit=3)] == ["1", "2", "3"]
    sampled = [r.id for r in prompt_rows("file", path, sample=5, seed=7)]
    assert sampled == [r.id for r in prompt_rows("file", path, sample=5, seed=7)]
    assert sampled != [r.id for r in prompt_rows("file", path, sample=5, seed=8)]
    assert sampled == sorted(sampled, key=int) and len(set(sampled)) == 5, "file order, no repeats"
    assert all(r.prompt == f"prompt {r.id}" for r in prompt_rows("file", path, sample=5, seed=7))


def test_the_builtin_set_has_a_few_dozen_prompts_in_its_categories():
    rows = prompt_rows("builtin", None)
    assert len(rows) >= 30 and len({r.id for r in rows}) == len(rows)
    assert {r.category for r in rows} == {"people", "animals", "objects", "scenes", "text", "counting", "styles"}


# -- a row in a job's config --------------------------------------------------------------------
def test_a_row_fills_the_prompt_and_the_sweep_axis_lists_every_row(tmp_path):
    path = write(tmp_path, "p.tsv", "id\tprompt\tnegative_prompt\na\ta ${literal} fox\t\nb\ta vase\tdark\n")
    cfg = make_config("prompts=file", f"prompts.path={path}", "prompt=a", "prompts.negative_prompt=blurry")
    assert (cfg.sampling.prompt, cfg.sampling.negative_prompt) == ("a ${literal} fox", "blurry"), "rows are literal"
    plan = plan_job(make_config("zoo=tiny", "prompts=file", f"prompts.path={path}", "prompt=b"))
    assert plan.call["prompt"] == "a vase" and plan.call["negative_prompt"] == "dark"
    assert plan.prompt_row == prompt_sets.PromptRow("b", "a vase", None, "dark")
    assert with_prompt_axis(cfg, ["sampling.steps=1,2"]) == ["sampling.steps=1,2", "prompt='a','b'"]
    assert with_prompt_axis(cfg, ["prompt=b"]) == ["prompt=b"], "a row chosen on the command line stays"


def test_a_jobs_identity_is_its_rows_text_not_the_files_path(tmp_path):
    first = write(tmp_path, "one.txt", "a red fox\n")
    (tmp_path / "elsewhere").mkdir()
    second = write(tmp_path / "elsewhere", "two.txt", "a red fox\n")
    same = [job_identity(make_config("prompts=file", f"prompts.path={path}", "prompt=1")) for path in (first, second)]
    assert same[0] == same[1]
    changed = write(tmp_path / "elsewhere", "three.txt", "a blue fox\n")
    assert job_identity(make_config("prompts=file", f"prompts.path={changed}", "prompt=1")) != same[0]


def test_a_single_run_of_a_set_asks_for_multirun_and_an_unknown_row_is_named():
    with pytest.raises(UserError, match="prompts=builtin sweeps one job per prompt of the set: add -m"):
        plan_job(make_config("zoo=tiny", "prompts=builtin"))
    with pytest.raises(UserError, match="prompt='nope' is not a row id of the prompt set"):
        plan_job(make_config("zoo=tiny", "prompts=builtin", "prompt=nope"))


def test_a_prompt_rows_label_shows_its_id_and_its_prompt():
    from runner.report.contact_sheets import _label
    from runner.report.sweep_folder import Param

    assert _label(Param("prompt", "prompt"), "fox", {"fox": "a red fox"}) == "prompt=fox: a red fox"
    assert _label(Param("sampling.steps", "sampling.steps"), 2, {"2": "not a prompt"}) == "sampling.steps=2"


# -- templates ---------------------------------------------------------------------------------
TEMPLATE = "sampling.prompt='a photo of ${vars.subject}'"


def test_a_template_variable_fills_the_prompt():
    plan = plan_job(make_config("zoo=tiny", TEMPLATE, "++vars.subject=cat"))
    assert plan.call["prompt"] == "a photo of cat"
    assert with_vars_added(["-m", "vars.subject=cat,dog", "sampling.steps=1"]) == \
        ["-m", "++vars.subject=cat,dog", "sampling.steps=1"]


@pytest.mark.parametrize("overrides,fragment", [
    ((TEMPLATE,), "sampling.prompt uses ${vars.subject}, which is not set"),
    ((TEMPLATE, "++vars.subject=cat", "++vars.style=oil"), "vars.style is set but no prompt uses it"),
])
def test_undefined_and_unused_variables_are_refused(overrides, fragment):
    with pytest.raises(UserError) as raised:
        plan_job(make_config("zoo=tiny", *overrides))
    assert fragment in str(raised.value)


# -- sweeps -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_prompt_set_sweep_is_one_job_per_row_and_cell_batched_reported_and_resumed(tiny_zoo, tmp_path):
    from benchmarks.bench import run_hydra
    from runner.commands import lcm_run as command

    path = write(tmp_path, "p.tsv", "id\tcategory\tprompt\nfox\tanimals\ta red fox\nowl\tanimals\tan owl\n"
                                    "vase\tobjects\ta blue vase\n")
    sweep = tmp_path / "sweep"
    arguments = [*SMALL, "prompts=file", f"prompts.path={path}", "sampling.steps=1,2", f"hydra.sweep.dir={sweep}"]
    run_hydra(command.run_app, arguments)
    records = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/run.json"))]
    assert len(records) == 6 and {r["status"] for r in records} == {"ok"}
    texts = {"fox": "a red fox", "owl": "an owl", "vase": "a blue vase"}
    for record in records:
        image = record["images"][0]
        assert record["call"]["prompt"] == texts[image["prompt_id"]] == texts[record["config"]["prompt"]]
        assert image["category"] == ("objects" if image["prompt_id"] == "vase" else "animals")
        png = Image.open(sweep / record["config"]["paths"]["output_dir"] / image["file"])
        assert json.loads(png.text["lcm-runner"])["image"]["prompt_id"] == image["prompt_id"]
    assert sorted(r["batch"]["jobs"] for r in records) == [3] * 6, "the prompts of one cell share a call"
    summary = (sweep / "summary.csv").read_text().splitlines()
    assert summary[0] == "job,sampling.steps,prompt,category,seed,prompt_id,file,status,time,error"
    assert len(summary) == 7 and all(",ok," in line for line in summary[1:])
    assert sorted(p.name for p in sweep.glob("contact_sheet*.png")) == [
        "contact_sheet_category=animals.png", "contact_sheet_category=objects.png"]
    assert Image.open(sweep / "contact_sheet_category=objects.png").height < \
        Image.open(sweep / "contact_sheet_category=animals.png").height, "a category's sheet: its own prompts"
    gallery = json.loads(re.search(r'id="gallery-data">(.*?)</script>', (sweep / "index.html").read_text(), re.S)[1])
    assert gallery["prompts"]["vase"] == "a blue vase" and "vase" in {row.get("prompt_id") for row in gallery["rows"]}
    run_hydra(command.run_app, arguments)  # again: every job is done, and skipped
    assert {json.loads(p.read_text())["status"] for p in sweep.glob("*/run.json")} == {"skipped"}
    assert all(len(list(p.parent.glob("image_*.png"))) == 1 for p in sweep.glob("*/run.json"))


@pytest.mark.slow
def test_a_template_sweep_draws_each_value_and_labels_the_axis_by_it(tiny_zoo, tmp_path):
    from benchmarks.bench import run_hydra
    from runner.commands import lcm_run as command

    sweep = tmp_path / "sweep"
    run_hydra(command.run_app, [*SMALL, TEMPLATE, "++vars.subject=cat,dog", f"hydra.sweep.dir={sweep}"])
    prompts = sorted(json.loads(p.read_text())["call"]["prompt"] for p in sweep.glob("*/run.json"))
    assert prompts == ["a photo of cat", "a photo of dog"]
    assert (sweep / "summary.csv").read_text().splitlines()[0] == "job,vars.subject,seed,file,status,time,error"


@pytest.mark.slow
@pytest.mark.parametrize("arguments,fragment", [
    (["prompts=builtin"], "prompts=builtin sweeps one job per prompt of the set: add -m"),
    (["-m", TEMPLATE, "vars.subject=cat", "vars.style=oil"], "vars.style is set but no prompt uses it"),
    (["-m", TEMPLATE], "sampling.prompt uses ${vars.subject}, which is not set"),
    (["-m", "prompts=builtin", "hydra/sweeper=basic"], "prompts=builtin needs lcm-run's sweeper"),
])
def test_lcm_run_refuses_bad_prompt_input_with_nothing_written(tmp_path, arguments, fragment):
    done = lcm_run(*arguments, "zoo=tiny", cwd=tmp_path)
    assert done.returncode == 2 and fragment in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not list(Path(tmp_path).iterdir()), "nothing may be written"
