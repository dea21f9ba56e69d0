"""`python -m benchmarks.gpu_bench`: SDXL + LCM-LoRA latency at full size, eager against the fast options.

No download is needed (and none is possible on the project's machines): the full-size SDXL UNet, VAE
and both text encoders are built from their published configs with random weights — speed does not
depend on weight values — with a rank-64 LoRA on the LCM-LoRA's layers, fused as the card fuses it.
The variants are the runner's own options (`device.channels_last`, with `device.vae_slicing` too,
`device.compile=regional`, `vae=fp16_fix`, `vae=taesdxl`), and `lora_layers_kept`: the card's code,
whose fused LoRA leaves peft's layers in the forward pass where "eager" (and lcm-run) take them out
(runner.engine.lora). Each
variant runs 1024², 4 LCM steps, batch 1 and batch 8, after a warm-up, and reports seconds per call,
images/s and peak GPU memory.

Then the whole runner (`--sweep-seeds`, default 32): the eager pipeline is saved as a diffusers
folder, and the same seeds are made three ways with it loaded once: the card's loop (one call per
seed, each PNG saved in the loop), `lcm-run -m` one job per call, and `lcm-run -m` with its seed
batching. That shows whether the runner (its writer threads above all: a 1024² PNG costs a CPU core
about what the GPU spends on the image) keeps up with the GPU.

`--tiny` builds the same architectures scaled down, for a smoke run on a CPU. Results go to
gpu_bench.json / gpu_bench.md (default benchmarks/results/).
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

# stabilityai/stable-diffusion-xl-base-1.0: unet/config.json, vae/config.json, text_encoder(_2)/config.json
SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816, norm_num_groups=32,
)
SDXL_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    sample_size=1024, scaling_factor=0.13025, force_upcast=True,
)
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
              projection_dim=768, hidden_act="quick_gelu")
CLIP_BIGG = dict(hidden_size=1280, intermediate_size=5120, num_attention_heads=20, num_hidden_layers=32,
                 projection_dim=1280, hidden_act="gelu")
# The same architectures, narrow enough for a CPU smoke run.
TINY = dict(
    unet=dict(block_out_channels=(32, 64, 128), transformer_layers_per_block=(1, 1, 2), attention_head_dim=(2, 4, 8),
              cross_attention_dim=96, addition_time_embed_dim=8, projection_class_embeddings_input_dim=112,
              sample_size=32),
    vae=dict(block_out_channels=(32, 64, 64, 64), layers_per_block=1, sample_size=256),
    clip_l=dict(hidden_size=32, intermediate_size=128, num_attention_heads=4, num_hidden_layers=2, projection_dim=32),
    clip_g=dict(hidden_size=64, intermediate_size=256, num_attention_heads=4, num_hidden_layers=2, projection_dim=64),
)
LCM_LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
                    "conv1", "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj"]


def build_pipeline(tiny: bool, dtype: torch.dtype, device: str) -> Any:
    """SDXL with random weights from its configs, LCMScheduler, a random rank-64 LoRA fused in."""
    from peft import LoraConfig

    pipe = sdxl_pipeline(tiny, device)
    pipe.unet.add_adapter(LoraConfig(r=64, lora_alpha=64, target_modules=LCM_LORA_TARGETS,
                                     init_lora_weights="gaussian"), adapter_name="lcm")
    pipe.fuse_lora(adapter_names=["lcm"])
    pipe.unload_lora_weights()  # fused: the LoRA's layers are gone, its effect stays in the weights
    return pipe.to(device, dtype)


def sdxl_pipeline(tiny: bool, device: str) -> Any:
    """SDXL (float32, on `device`) with random weights from its configs (`tiny`: scaled down), and
    LCMScheduler."""
    from diffusers import AutoencoderKL, LCMScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from runner import zoo  # its tokenizer: any CLIP vocabulary times the same

    torch.manual_seed(0)
    text = dict(vocab_size=49408, max_position_embeddings=77)
    with torch.device(device):  # initialise on the GPU: 3.5 B random parameters are slow on a CPU
        unet = UNet2DConditionModel(**{**SDXL_UNET, **(TINY["unet"] if tiny else {})})
        vae = AutoencoderKL(**{**SDXL_VAE, **(TINY["vae"] if tiny else {})})
        encoder = CLIPTextModel(CLIPTextConfig(**text, **{**CLIP_L, **(TINY["clip_l"] if tiny else {})}))
        encoder_2 = CLIPTextModelWithProjection(
            CLIPTextConfig(**text, **{**CLIP_BIGG, **(TINY["clip_g"] if tiny else {})}))
    tokenizers = zoo.ensure_zoo() / "sdxl-base"
    scheduler = LCMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
                             timestep_spacing="leading")
    return StableDiffusionXLPipeline(
        vae=vae, text_encoder=encoder, text_encoder_2=encoder_2, unet=unet, scheduler=scheduler,
        tokenizer=CLIPTokenizer.from_pretrained(tokenizers / "tokenizer"),
        tokenizer_2=CLIPTokenizer.from_pretrained(tokenizers / "tokenizer_2"))


def variants(device: str) -> Dict[str, Callable[[Any], None]]:
    """What each variant changes on a fresh eager pipeline."""
    def channels_last(pipe):  # as device.channels_last holds them
        from runner.engine.models import hold_channels_last

        hold_channels_last(pipe.unet, pipe.vae)

    def compiled(pipe):
        channels_last(pipe)
        pipe.unet.compile_repeated_blocks(fullgraph=True)  # regional: compiles one block, reuses it

    def fp16_fix_vae(pipe):
        pipe.vae.config.force_upcast = False  # as with madebyollin/sdxl-vae-fp16-fix: decode in fp16

    def taesdxl(pipe):  # vae=taesdxl: madebyollin/taesdxl's architecture (AutoencoderTiny's defaults)
        from diffusers import AutoencoderTiny

        narrow = pipe.vae.config.block_out_channels[0] < 128  # --tiny
        width = dict(encoder_block_out_channels=(16,) * 4, decoder_block_out_channels=(16,) * 4) if narrow else {}
        pipe.vae = AutoencoderTiny(**width).to(pipe.device, pipe.dtype)

    def lora_layers_kept(pipe):  # the card's fuse_lora() alone: peft's merged layers stay in the forward
        from peft import LoraConfig

        pipe.unet.add_adapter(LoraConfig(r=64, lora_alpha=64, target_modules=LCM_LORA_TARGETS), adapter_name="kept")
        pipe.fuse_lora(adapter_names=["kept"])  # peft's default init: B = 0, the weights do not change

    def sliced(pipe):  # device=cpu_fast's pair: on a CPU a batch decoded one image at a time was faster
        channels_last(pipe)
        pipe.vae.enable_slicing()

    chosen = {"eager": lambda pipe: None, "lora_layers_kept": lora_layers_kept, "channels_last": channels_last,
              "vae_fp16_decode": fp16_fix_vae, "taesdxl_preview": taesdxl}
    if device.startswith("cuda"):
        chosen["compile_regional+channels_last"] = compiled
        chosen["all"] = lambda pipe: (compiled(pipe), fp16_fix_vae(pipe))
    chosen["channels_last+vae_slicing"] = sliced  # last: the question it answers matters least
    return chosen


def measure(pipe: Any, size: int, steps: int, batch: int, repeats: int, device: str) -> Dict[str, float]:
    call = dict(prompt=["a photo of a cat"] * batch, num_inference_steps=steps, guidance_scale=0.0,
                height=size, width=size, output_type="np")
    pipe.set_progress_bar_config(disable=True)
    pipe(**call)  # warm-up (and compilation)
    synchronize = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        synchronize()
        start = time.perf_counter()
        pipe(**call)
        synchronize()
        times.append(time.perf_counter() - start)
    best = min(times)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    return {"seconds_per_call": round(best, 4), "seconds_per_image": round(best / batch, 4),
            "images_per_second": round(batch / best, 3), "peak_gib": None if peak is None else round(peak, 2)}


def measure_sweep(pipe: Any, size: int, steps: int, seeds: int, batch: int, device: str,
                  folder: Path) -> Dict[str, Any]:
    """`seeds` images of `pipe` (saved to `folder` first), each way with the model already loaded:
    the card's loop, and lcm-run sweeps without and with seed batching."""
    from diffusers import DiffusionPipeline

    from runner.commands import lcm_run
    from runner.engine.state import ENGINE
    from benchmarks.bench import run_hydra

    model = folder / "model"
    pipe.save_pretrained(model)
    prompt = "a photo of a cat"
    loaded = DiffusionPipeline.from_pretrained(model, dtype=pipe.dtype).to(device)
    loaded.set_progress_bar_config(disable=True)

    def card_loop(out: Path) -> None:
        _card_loop(loaded, prompt, steps, size, seeds, device, out)

    arguments = [f"model.source={model}", "model.variant=null", "lora=none", "scheduler=lcm", f"device={device}",
                 f"sampling.steps={steps}", f"sampling.height={size}", f"sampling.width={size}",
                 f"sampling.prompt={prompt}"]

    def lcm_run_sweep(batch_size: int) -> Callable[[Path], None]:
        return lambda out: run_hydra(lcm_run.run_app, [*arguments, f"sampling.seed=range(0,{seeds})",
                                                   f"hydra.sweeper.batch_size={batch_size}", f"hydra.sweep.dir={out}"])

    card_loop(folder / "warm-up-card")  # first calls at this shape, file cache
    run_hydra(lcm_run.run_app, [*arguments, "sampling.seed=0", f"hydra.sweep.dir={folder / 'warm-up-lcm-run'}"])  # loads
    walls = {}
    try:
        for name, way in {"card_loop": card_loop, "lcm_run": lcm_run_sweep(1), "lcm_run_batched": lcm_run_sweep(batch)}.items():
            started = time.perf_counter()
            way(folder / name)
            walls[name] = round(time.perf_counter() - started, 3)
    finally:
        ENGINE.reset()  # the runner's copy of the model; the card's goes with this function
    rates = {name: round(seeds / wall, 3) for name, wall in walls.items()}
    return {"seeds": seeds, "batch": batch, "seconds": walls, "images_per_second": rates,
            "ratios": {name: round(wall / walls["card_loop"], 3) for name, wall in walls.items()}}


def _card_loop(pipe: Any, prompt: str, steps: int, size: int, seeds: int, device: str, out: Path) -> None:
    """The model card's code: one call per seed, each image saved in the loop."""
    out.mkdir(parents=True)
    for seed in range(seeds):
        image = pipe(prompt, num_inference_steps=steps, guidance_scale=0.0, height=size, width=size,
                     generator=torch.Generator(device).manual_seed(seed)).images[0]
        image.save(out / f"{seed}.png")


def run(tiny: bool, size: int, steps: int, batches: Sequence[int], repeats: int, sweep_seeds: int,
        work: Path, only: Sequence[str] = (), report: Callable[[Dict[str, Any]], None] = lambda result: None,
        ) -> Dict[str, Any]:
    """Every variant (or those in `only`), then the whole-runner comparison. `report` gets the result
    so far after each variant: a run stopped by a time limit keeps what it measured. A variant that
    fails (inductor without a compiler, out of memory) is recorded with its error; the others run."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.float16 if device == "cuda" else torch.float32
    rows: List[Dict[str, Any]] = []
    result = {"device": device, "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
              "dtype": str(dtype), "tiny": tiny, "size": size, "steps": steps, "torch": torch.__version__,
              "python": platform.python_version(), "rows": rows, "sweep": None, "complete": False}
    for name, change in variants(device).items():
        if only and name not in only:
            continue
        pipe = None
        try:
            pipe = build_pipeline(tiny, dtype, device)
            change(pipe)
            for batch in batches:
                try:
                    rows.append({"variant": name, "batch": batch, **measure(pipe, size, steps, batch, repeats, device)})
                except torch.OutOfMemoryError as error:  # a smaller batch may have fit
                    rows.append({"variant": name, "batch": batch, "error": _error(error)})
                    torch.cuda.empty_cache()
            if name == "eager" and sweep_seeds:
                try:
                    result["sweep"] = measure_sweep(pipe, size, steps, sweep_seeds, max(batches), device, work)
                except Exception as error:
                    result["sweep"] = {"error": _error(error)}
        except Exception as error:
            rows.append({"variant": name, "batch": None, "error": _error(error)})
        finally:
            del pipe
            if device == "cuda":
                torch.cuda.empty_cache()
        report(result)
    result["complete"] = True
    return result


def _error(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


def to_markdown(result: Dict[str, Any]) -> str:
    title = (f"SDXL + LCM-LoRA (fused), {result['size']}², {result['steps']} steps, {result['dtype']} on "
             f"{result['gpu'] or result['device']}{' (tiny architectures)' if result['tiny'] else ''}")
    lines = [f"### {title}", "", "| variant | batch | s / call | s / image | images/s | peak GiB |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [_row(r) for r in result["rows"]]
    sweep = result.get("sweep")
    if sweep and "error" in sweep:
        lines += ["", f"Whole-runner comparison: failed ({sweep['error']})."]
    elif sweep:
        rate, ratio = sweep["images_per_second"], sweep["ratios"]
        lines += ["", f"{sweep['seeds']} seeds, eager, model loaded once (images/s; time against the card's loop):", "",
                  f"- the card's loop, one call per seed, PNG saved in the loop: {rate['card_loop']}",
                  f"- `lcm-run -m`, one job per call (`hydra.sweeper.batch_size=1`): {rate['lcm_run']} "
                  f"({ratio['lcm_run']:.2f}x the time)",
                  f"- `lcm-run -m`, seeds batched {sweep['batch']} to a call: {rate['lcm_run_batched']} "
                  f"({ratio['lcm_run_batched']:.2f}x the time)"]
    if not result.get("complete", True):
        lines += ["", "(Incomplete: the run stopped before its last variant.)"]
    return "\n".join(lines) + "\n"


def _row(r: Dict[str, Any]) -> str:
    batch = r["batch"] if r["batch"] is not None else "-"
    if "error" in r:
        return f"| {r['variant']} | {batch} | failed: {r['error'].replace('|', '/')} | | | |"
    return (f"| {r['variant']} | {batch} | {r['seconds_per_call']} | {r['seconds_per_image']} | "
            f"{r['images_per_second']} | {r['peak_gib'] if r['peak_gib'] is not None else '-'} |")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="scaled-down architectures (CPU smoke run)")
    parser.add_argument("--size", type=int, default=None, help="image size (default 1024, or 256 with --tiny)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batches", default="1,8", help="comma-separated batch sizes")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sweep-seeds", type=int, default=32,
                        help="images in the whole-runner comparison (0 leaves it out)")
    parser.add_argument("--variants", type=lambda text: text.split(","), default=[],
                        help="only these variants, comma-separated (default: all the device allows)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--work", type=Path, default=None,
                        help="where the whole-runner comparison saves the model and its images, in a temporary "
                             "folder removed at the end (default: the system's temp folder; never --out, which "
                             "holds only the tables, so that a run cut short leaves them alone to collect)")
    args = parser.parse_args(argv)
    known = list(variants("cuda"))
    if any(name not in known for name in args.variants):
        parser.error(f"--variants {','.join(args.variants)}: the variants are {', '.join(known)}")
    size = args.size or (256 if args.tiny else 1024)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gpu-bench-work-", dir=args.work) as work:
        result = run(args.tiny, size, args.steps, [int(b) for b in args.batches.split(",")], args.repeats,
                     args.sweep_seeds, Path(work), args.variants, report=lambda partial: _write(args.out, partial))
    print(_write(args.out, result))
    return 0


def _write(out: Path, result: Dict[str, Any]) -> str:
    """gpu_bench.json and gpu_bench.md as they stand; returns the table."""
    (out / "gpu_bench.json").write_text(json.dumps(result, indent=2) + "\n")
    table = to_markdown(result)
    (out / "gpu_bench.md").write_text(table)
    return table


if __name__ == "__main__":
    raise SystemExit(main())
