"""Typed schema of a run and the checks that types alone cannot express.

Torch-free by design: composing, validating and planning a sweep must stay instant.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from runner.config import knobs
from runner.config.plain import Plain, as_plain, to_builtin
from runner.errors import UserError


@dataclass
class ModelConfig:
    source: str = MISSING  # hub id or local diffusers folder
    variant: Optional[str] = None  # e.g. fp16: which weight files to read
    # A VAE in place of the model's own (hub id or folder): an AutoencoderKL such as
    # madebyollin/sdxl-vae-fp16-fix (decodes in float16 without overflowing), or an AutoencoderTiny
    # such as madebyollin/taesdxl (a fast, lower-quality preview decoder). Group `vae` names both.
    vae: Optional[str] = None
    # Where a single-file checkpoint's configs come from (a diffusers folder or hub id holding
    # model_index.json and each component's config): used only when `source` is one file.
    config: Optional[str] = None


@dataclass
class LoraEntry:
    source: str = MISSING  # hub id, local folder or .safetensors file
    weight_name: Optional[str] = None  # file inside a hub repo or folder
    weight: float = 1.0


@dataclass
class SamplingConfig:
    prompt: str = MISSING
    negative_prompt: Optional[str] = None
    steps: int = 4
    guidance_scale: float = 0.0
    seed: int = 0
    num_images: int = 1
    # null: the base's own size, as diffusers picks it (runner.config.families): 1024 for SDXL and
    # SSD-1B, 512 for Stable Diffusion 1.5, the tiny twins' a quarter of that
    height: Optional[int] = None
    width: Optional[int] = None
    # The knobs below are passed by diffusers' own names only when set (null: the pipeline's default).
    prompt_2: Optional[str] = None  # SDXL's second text encoder (OpenCLIP bigG); null: `prompt`
    negative_prompt_2: Optional[str] = None
    eta: Optional[float] = None  # TCD's gamma / DDIM's eta: only for schedulers whose step takes it
    clip_skip: Optional[int] = None  # CLIP layers skipped, diffusers' count (A1111's "Clip skip" is one more for SD 1.5, two more for SDXL)
    guidance_rescale: Optional[float] = None  # rescales CFG's output (0 to 1); acts only with guidance_scale > 1
    prompt_syntax: str = "plain"  # plain: as written, cut at 77 tokens | compel: weights and long prompts


@dataclass
class DeviceConfig:
    type: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    dtype: str = "auto"  # auto | float32 | float16 | bfloat16
    # UNet, VAE and ControlNet / T2I-Adapter in channels-last memory format: faster convolutions
    # (CPU: measured, docs/performance.md); pixels within one level of the default layout's.
    channels_last: bool = False
    # Decode a batch one image at a time (less memory; on a CPU, faster). On a CPU a sweep's batched
    # call decodes each job's images on their own either way (runner.engine.generation).
    vae_slicing: bool = False
    vae_tiling: bool = False  # decode large images in tiles (less memory, seams possible)
    cpu_offload: str = "none"  # none | model | sequential: keep weights in CPU memory (small GPUs)
    # torch.compile of the UNet, at its first job (after the LoRA stack is applied): `regional`
    # compiles its repeated transformer blocks (cold start in seconds), `full` the whole UNet.
    compile: str = "none"  # none | regional | full
    compile_backend: str = "inductor"  # any torch.compile backend; aot_eager / eager to debug
    compile_mode: Optional[str] = None  # e.g. max-autotune-no-cudagraphs
    # Pad every LoRA loaded into the UNet to this rank (zeros: the same output), so that a later file
    # of a rank up to it is swapped into its adapter in place, which a compiled UNet runs without
    # recompiling. The highest rank among the files a sweep swaps; null: no padding.
    lora_hotswap_rank: Optional[int] = None


@dataclass
class ZooConfig:
    name: str = "hub"
    size_scale: float = 1.0  # what ${zoo_size:N} multiplies N by
    twins: Dict[str, str] = field(default_factory=dict)  # hub id or URL -> path in the tiny zoo


@dataclass
class PromptsConfig:
    """A prompt set (runner.config.prompt_sets): each row a value of the sweep axis `prompt`."""
    kind: str = "none"  # none: sampling.prompt as written | file | builtin
    path: Optional[str] = None  # prompts=file: a .txt, .csv, .tsv or .jsonl file
    limit: Optional[int] = None  # the first N rows
    sample: Optional[int] = None  # N rows drawn with `seed`, kept in file order
    seed: int = 0
    negative_prompt: Optional[str] = None  # for rows that have no negative_prompt of their own


@dataclass
class MetricConfig:
    """One per-image score (runner.config.metrics): `metrics.<name>.*`."""
    kind: str = MISSING  # clip (CLIP-style image-text score) | edge_f1 | masked_psnr
    model: Optional[str] = None  # clip: the model (hub id or folder)
    processor: Optional[str] = None  # clip: its processor, where the model's repo has none (null: the model's)
    scale: Optional[float] = 100.0  # clip: score = scale x cosine; null: the model's own logit scale
    floor: Optional[float] = 0.0  # clip: scores below it are raised to it (torchmetrics' CLIP score: 0); null: none
    tolerance: int = 2  # edge_f1: pixels an edge may be off and still match
    cap: float = 100.0  # masked_psnr: dB for identical regions (JSON has no infinity)


@dataclass
class OutputsConfig:
    """How a job's images are written (runner.outputs.image_files): not part of what a job is."""
    format: str = "png"  # png | webp | jpeg
    quality: int = 90  # webp and jpeg: the encoder's quality, 1-100
    lossless: bool = False  # webp: lossless (pixels exact, like PNG)
    keep: str = "all"  # all | thumbnails: only what the report needs (a thumbnail per image, run.json)


@dataclass
class TrackerConfig:
    """Where every job is logged as a tracked run (runner.tracking): `tracker=mlflow|tensorboard|wandb`."""
    kind: str = "none"  # none | mlflow | tensorboard | wandb (offline)
    # mlflow: a tracking URI (http://host:port, sqlite:///file.db); null: sqlite:///<output folder>/mlflow.db.
    # tensorboard: the log folder (null: <output folder>/tensorboard); wandb: the folder holding wandb/
    uri: Optional[str] = None
    experiment: str = "lcm-runner"  # MLflow experiment, W&B project
    timeout: float = 5.0  # seconds a tracker request may take before the tracker counts as down


@dataclass
class PathsConfig:
    root: str = "outputs"
    output_dir: str = MISSING
    # An AUTOMATIC1111 or ComfyUI models folder: weight references may then be bare names in it.
    models: Optional[str] = None


@dataclass
class ProgressConfig:
    mode: str = "auto"  # a sweep's progress: auto (a bar on a terminal, else lines) | bar | lines | none
    every: float = 30.0  # seconds between two plain progress lines (mode lines)


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    # `_target_` names a scheduler's from_config; the other keys override the model's config.
    scheduler: Dict[str, Any] = field(default_factory=dict)
    lora: Dict[str, LoraEntry] = field(default_factory=dict)
    lora_scale: Optional[float] = None  # cross_attention_kwargs={"scale": ...} for live adapters
    fuse_lora: bool = False
    conditioning: Dict[str, Any] = field(default_factory=lambda: {"kind": "none"})
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)
    zoo: ZooConfig = field(default_factory=ZooConfig)
    prompts: PromptsConfig = field(default_factory=PromptsConfig)
    prompt: Optional[str] = None  # the prompt set's row id (its sweep axis; filled in by lcm-run's sweeper)
    # Template variables: sampling.prompt='a photo of ${vars.subject}', swept with vars.subject=cat,dog.
    vars: Dict[str, Any] = field(default_factory=dict)
    # Per-image scores, by option name: metrics=[clip_score,edge_f1] (conf/metrics/).
    metrics: Dict[str, MetricConfig] = field(default_factory=dict)
    paths: PathsConfig = field(default_factory=PathsConfig)
    outputs: OutputsConfig = field(default_factory=OutputsConfig)  # image format and what a job keeps
    tracker: TrackerConfig = field(default_factory=TrackerConfig)  # tracker=mlflow|tensorboard|wandb (conf/tracker/)
    plan: bool = False  # a dry run: say what would run and load, load and write nothing
    on_invalid: str = "fail"  # a sweep with invalid jobs: "fail" before running any, or "skip" them
    allow_pickle: bool = False  # load pickle weights (.bin/.ckpt), which can run code: trusted files only
    # Grid points this one job of a -m sweep runs one after another, each into its own job folder:
    # overrides in Hydra's grammar, e.g. "sampling.seed=0,1,2,3" (runner.sweep.chunks). null: the job alone.
    chunk: Optional[str] = None
    progress: ProgressConfig = field(default_factory=ProgressConfig)


ConfigStore.instance().store(name="run_schema", node=RunConfig)
_TYPED_NODES = {"model": ModelConfig, "sampling": SamplingConfig, "device": DeviceConfig, "zoo": ZooConfig,
                "prompts": PromptsConfig, "paths": PathsConfig, "progress": ProgressConfig, "outputs": OutputsConfig,
                "tracker": TrackerConfig}
# Not part of what a job is: where outputs go, Hydra's settings, how a prompt set was chosen (a
# job's prompt text is in sampling; its row id in `prompt`), how its images are scored, how progress
# shows, how its images are stored (`outputs`: a resumed sweep keeps finished jobs as written), and
# where it is logged.
NOT_IDENTITY = ("hydra", "paths", "prompts", "metrics", "progress", "outputs", "tracker")


def _zoo_size(pixels: int, *, _root_: DictConfig) -> int:
    """A size written for real weights, scaled for the active zoo, kept a multiple of 8."""
    return max(8, round(int(pixels) * float(_root_.zoo.size_scale) / 8) * 8)


OmegaConf.register_new_resolver("zoo_size", _zoo_size, replace=True)

LIMITS = {"steps": 1000, "num_images": 256, "height": 8192, "width": 8192}
DEVICE_TYPES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float32", "float16", "bfloat16")
OFFLOAD = ("none", "model", "sequential")
COMPILE = ("none", "regional", "full")
PROGRESS_MODES = ("auto", "bar", "lines", "none")
IMAGE_FORMATS = ("png", "webp", "jpeg")
KEEP = ("all", "thumbnails")
TRACKERS = ("none", "mlflow", "tensorboard", "wandb")
# Only diffusers schedulers may be instantiated: a config (or a PNG's metadata) never names code.
SCHEDULER_TARGET_PREFIX = "diffusers."
SCHEDULER_TARGET_SUFFIX = "Scheduler.from_config"


def validate(cfg: Any) -> None:
    """Raise one UserError listing every value that is out of range, before anything loads. `cfg`:
    a DictConfig, or its values as Plain data (runner.config.plain)."""
    cfg = as_plain(cfg)
    _check_keys(cfg)
    problems = list(_problems(cfg))
    if problems:
        raise UserError(
            "Invalid configuration: " + "; ".join(problems) + ". Fix the value on the command line "
            "(for example `sampling.steps=4`) or in the experiment file, then run again."
        )


def _check_keys(cfg: DictConfig) -> None:
    """Keys added with `+` pass Hydra's struct check; the schema still has to know them."""
    for key, known in _unknown_keys(cfg):
        raise UserError(f"{key} is not a setting lcm-run knows (known here: {', '.join(sorted(known))}). "
                        "Check its spelling against `lcm-run --cfg job`, or remove it.")


PROMPT_FIELDS = ("prompt", "negative_prompt", "prompt_2", "negative_prompt_2")  # the sampling keys that template variables fill in
_RAISED_BY_US = f"{UserError.__name__} raised while resolving interpolation: "
_VARIABLE = re.compile(r"\$\{vars\.([^}:]+)\}")


def check_prompt_fields(cfg: DictConfig) -> None:
    """The prompt fields resolve (a prompt set's row, every `${vars.NAME}` set), and every template
    variable is used by one of them: a variable no prompt uses would sweep identical jobs."""
    written = OmegaConf.to_container(cfg.sampling, resolve=False)  # the fields as typed, interpolations unresolved
    for key in PROMPT_FIELDS:
        raw = written[key]
        try:
            cfg.sampling[key]
        except InterpolationResolutionError as error:
            message = str(error).splitlines()[0]
            if message.startswith(_RAISED_BY_US):  # a prompt set's own message, as OmegaConf relays it
                raise UserError(message[len(_RAISED_BY_US):]) from None
            missing = re.search(r"Interpolation key '([^']+)' not found", str(error))
            if missing is None:
                raise UserError(f"sampling.{key}={raw!r} cannot be filled in: {str(error).splitlines()[0]}") from None
            name = missing.group(1)
            raise UserError(f"sampling.{key} uses ${{{name}}}, which is not set. Set it ({name}=VALUE) or sweep "
                            f"it ({name}=a,b), or take it out of the prompt.") from None
    check_vars_used(written, cfg.get("vars"))


def check_vars_used(written: Mapping[str, Any], variables: Optional[Mapping[str, Any]]) -> None:
    """Every template variable is used by a prompt field, as `written` (the sampling node, unresolved)."""
    used = set()
    for key in PROMPT_FIELDS:
        raw = written[key]
        used |= set(_VARIABLE.findall(raw)) if isinstance(raw, str) else set()
    unused = sorted(set(variables or {}) - used)
    if unused:
        raise UserError(f"vars.{unused[0]} is set but no prompt uses it (sampling.prompt and "
                        f"sampling.negative_prompt hold no ${{vars.{unused[0]}}}), so every value would draw the "
                        f"same image. Use it in a prompt, e.g. sampling.prompt='a photo of ${{vars.{unused[0]}}}', "
                        "or drop it.")


def _unknown_keys(cfg: DictConfig) -> Iterator[tuple]:
    """(dotted key, the keys allowed there) for each key the schema does not have. Cheap: it walks
    key names only, which matters when a sweep of hundreds of jobs is checked before it starts."""
    top = _fields(RunConfig)
    for key in cfg:
        if key != "hydra" and key not in top:
            yield key, top
    for key, schema in _TYPED_NODES.items():
        allowed = _fields(schema)
        yield from ((f"{key}.{k}", allowed) for k in cfg[key] if k not in allowed)
    for node, schema in (("lora", LoraEntry), ("metrics", MetricConfig)):
        allowed = _fields(schema)
        for name, entry in cfg[node].items():
            yield from ((f"{node}.{name}.{k}", allowed) for k in entry if k not in allowed)


def _fields(schema: type) -> set:
    return set(schema.__dataclass_fields__)


def _problems(cfg: DictConfig) -> Iterator[str]:
    s = cfg.sampling
    for key, most in LIMITS.items():  # beyond these a job is a typo or a hostile config, not an experiment
        if s[key] is not None and s[key] > most:
            yield f"sampling.{key}={s[key]} is more than {most}"
    if not str(s.prompt).strip():
        yield "sampling.prompt is empty; give the text to draw"
    if s.steps < 1:
        yield f"sampling.steps={s.steps} must be at least 1 (LCM-LoRA is made for 2-8)"
    for key, value in _numbers(cfg):
        if not math.isfinite(value):
            yield f"{key}={value} is not a finite number"
    if s.guidance_scale < 0:
        yield f"sampling.guidance_scale={s.guidance_scale} must be 0 or more (the card uses 0 or 1-2)"
    if s.num_images < 1:
        yield f"sampling.num_images={s.num_images} must be at least 1"
    if s.seed < 0:
        yield f"sampling.seed={s.seed} must be 0 or more"
    for key in ("height", "width"):
        value = s[key]
        if value is not None and (value < 8 or value % 8):
            nearest = sorted({max(8, value // 8 * 8), max(8, (value // 8 + 1) * 8)})
            yield (f"sampling.{key}={value} must be a positive multiple of 8 "
                   f"(the VAE downsamples x8; try {' or '.join(map(str, nearest))})")
    device_type = str(cfg.device.type)
    if device_type.split(":")[0] not in DEVICE_TYPES or not _valid_device_index(device_type):
        yield f"device.type={device_type!r} is not one of {', '.join(DEVICE_TYPES)} (or cuda:N)"
    if cfg.device.cpu_offload not in OFFLOAD:
        yield f"device.cpu_offload={cfg.device.cpu_offload!r} is not one of {', '.join(OFFLOAD)}"
    if cfg.device.compile not in COMPILE:
        yield f"device.compile={cfg.device.compile!r} is not one of {', '.join(COMPILE)}"
    if cfg.device.dtype not in DTYPES:
        yield f"device.dtype={cfg.device.dtype!r} is not one of {', '.join(DTYPES)}"
    if cfg.device.lora_hotswap_rank is not None and cfg.device.lora_hotswap_rank < 1:
        yield (f"device.lora_hotswap_rank={cfg.device.lora_hotswap_rank} must be at least 1 (the highest rank "
               "among the LoRA files the sweep swaps), or null")
    if cfg.progress.mode not in PROGRESS_MODES:
        yield f"progress.mode={cfg.progress.mode!r} is not one of {', '.join(PROGRESS_MODES)}"
    if not cfg.progress.every > 0:
        yield f"progress.every={cfg.progress.every} must be more than 0 (seconds between progress lines)"
    yield from _outputs_problems(cfg.outputs)
    if cfg.tracker.kind not in TRACKERS:
        yield f"tracker.kind={cfg.tracker.kind!r} is not one of {', '.join(TRACKERS)} (choose tracker=mlflow etc.)"
    if not cfg.tracker.timeout > 0:
        yield f"tracker.timeout={cfg.tracker.timeout} must be more than 0 seconds"
    if cfg.on_invalid not in ("fail", "skip"):
        yield f"on_invalid={cfg.on_invalid!r} is not one of fail, skip"
    yield from _scheduler_problems(cfg.scheduler)
    yield from knobs.problems(cfg)
    for name, entry in cfg.lora.items():
        if not str(entry.source).strip():
            yield f"lora.{name}.source is empty; give a hub id, a folder or a .safetensors file"


def _outputs_problems(outputs: DictConfig) -> Iterator[str]:
    if outputs.format not in IMAGE_FORMATS:
        yield f"outputs.format={outputs.format!r} is not one of {', '.join(IMAGE_FORMATS)}"
    if not 1 <= outputs.quality <= 100:
        yield f"outputs.quality={outputs.quality} must be 1-100 (the WebP / JPEG encoder's quality)"
    if outputs.lossless and outputs.format != "webp":
        yield (f"outputs.lossless=true applies to outputs.format=webp only (not {outputs.format}); "
               "png is always lossless, jpeg never")
    if outputs.keep not in KEEP:
        yield f"outputs.keep={outputs.keep!r} is not one of {', '.join(KEEP)}"


def _numbers(cfg: DictConfig) -> Iterator[tuple]:
    """Every float a user may set, with its key."""
    yield "sampling.guidance_scale", cfg.sampling.guidance_scale
    if cfg.lora_scale is not None:
        yield "lora_scale", cfg.lora_scale
    for name, entry in cfg.lora.items():
        yield f"lora.{name}.weight", entry.weight
    for key, value in cfg.conditioning.items():
        if isinstance(value, float):
            yield f"conditioning.{key}", value


def _valid_device_index(device_type: str) -> bool:
    name, _, index = device_type.partition(":")
    return not index or (name == "cuda" and index.isdigit())


def _scheduler_problems(scheduler: DictConfig) -> Iterator[str]:
    target = scheduler.get("_target_")
    if not isinstance(target, str) or not (
        target.startswith(SCHEDULER_TARGET_PREFIX) and target.endswith(SCHEDULER_TARGET_SUFFIX)
    ):
        yield (f"scheduler._target_={target!r} must name a diffusers scheduler's from_config, "
               "like diffusers.LCMScheduler.from_config (choose scheduler=lcm|tcd|euler|euler_a|dpmpp_2m|ddim)")
    elif scheduler.get("_partial_") is not True:
        yield "scheduler._partial_ must be true: the scheduler is built from the model's own config"


def job_identity(cfg: DictConfig) -> str:
    """What makes two jobs the same job: a hash of the resolved config, where its outputs go, Hydra's
    own settings and the prompt set's file aside (a row is its text). The basis of skip-what-is-done
    and resume."""
    values = {key: _identity_value(cfg, key) for key in cfg if key not in NOT_IDENTITY}
    text = json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _identity_value(cfg: Any, key: str) -> Any:
    return cfg[key] if isinstance(cfg, Plain) else plain_value(cfg[key])


def record_of(cfg: DictConfig, output_dir: str) -> Dict[str, Any]:
    """to_container(cfg), with `paths.output_dir` the folder the job wrote to: what run.json keeps.
    Without copying cfg, and without resolving what output_dir said (`${hydra:...}` outside Hydra)."""
    values = {}
    for key in cfg:
        if key == "paths":
            values[key] = {k: output_dir if k == "output_dir" else plain_value(cfg.paths[k]) for k in cfg.paths}
        else:
            values[key] = plain_value(cfg[key])
    return values


def override_strings(overrides: Any) -> List[str]:
    """Hydra's overrides (`hydra.overrides.task`) as typed: a `${...}` inside one (a template prompt)
    is text, not an interpolation to resolve."""
    if OmegaConf.is_config(overrides):
        overrides = OmegaConf.to_container(overrides, resolve=False)
    return [str(override) for override in overrides]


def plain_value(value: Any) -> Any:
    """A config node as resolved plain data (builtin dicts and lists); a scalar as is."""
    if isinstance(value, (dict, list)):
        return to_builtin(value)
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def to_container(cfg: DictConfig) -> Dict[str, Any]:
    """The fully resolved config as plain data (for run.json and hashing)."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
