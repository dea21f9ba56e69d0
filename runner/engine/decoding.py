"""A pipeline's VAE decode, changed for one call, and the NaN / black-image guard.

`vae.decode` is replaced by a wrapper of it (an instance attribute, taken away again), whatever
pipeline class makes the call: to decode a batch in parts, or to keep the latents for the guard.
SDXL's VAE overflows in float16 and turns a whole image into NaN (black once saved). The decode is
watched; a bad image is decoded again in float32, once, and the record says so. Non-finite latents
cannot be saved by a decode: the job fails with a clear error."""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Tuple

import numpy as np
import torch


@contextlib.contextmanager
def decode_replaced(vae: Any, wrap: Callable[[Callable[..., Any]], Callable[..., Any]]) -> Iterator[None]:
    """Inside the block, `vae.decode` is `wrap(vae.decode)`."""
    shadowed = vae.__dict__.get("decode")
    vae.decode = wrap(vae.decode)
    try:
        yield
    finally:
        if shadowed is None:
            del vae.decode
        else:
            vae.decode = shadowed


@contextlib.contextmanager
def decoded_in_parts(vae: Any, sizes: Optional[Sequence[int]]) -> Iterator[None]:
    """Inside the block, a decode of sum(sizes) latents decodes consecutive parts of these sizes, one
    call each, as the pipelines call it (`return_dict=False`). None or one part: left as it is."""
    if not sizes or len(sizes) < 2:
        yield
        return
    sizes = list(sizes)

    def wrap(decode: Callable[..., Any]) -> Callable[..., Any]:
        def decode_in_parts(z: Any, *args: Any, return_dict: bool = True, **kwargs: Any) -> Any:
            if return_dict or z.shape[0] != sum(sizes):
                return decode(z, *args, return_dict=return_dict, **kwargs)
            return (torch.cat([decode(part, *args, return_dict=False, **kwargs)[0] for part in z.split(sizes)]),)
        return decode_in_parts

    with decode_replaced(vae, wrap):
        yield


class GenerationFailed(RuntimeError):
    """The pipeline ran but its output is unusable (NaN or all black)."""


@contextlib.contextmanager
def watch_decode(vae) -> Iterator[Dict[str, Any]]:
    """Keep the latents the pipeline hands to `vae.decode`, whatever pipeline class it is."""
    seen: Dict[str, Any] = {}

    def keeping_latents(decode):
        def decode_keeping(z, *args, **kwargs):
            seen["latents"] = z
            return decode(z, *args, **kwargs)
        return decode_keeping

    with decode_replaced(vae, keeping_latents):
        yield seen


def usable(images: np.ndarray) -> bool:
    """Finite, and not all black as saved (8-bit)."""
    return bool(np.isfinite(images).all() and (images * 255).round().max() > 0)


def checked_images(pipe, images: np.ndarray, latents) -> Tuple[np.ndarray, Dict[str, Any]]:
    """`images` (floats in [0, 1], as output_type="np") if usable, else one float32 decode."""
    if usable(images):
        return images, {"decode_retried_fp32": False}
    if latents is None or not torch.isfinite(latents).all():
        raise GenerationFailed(
            "the denoised latents are not finite (NaN/inf): the UNet overflowed, which a decode cannot "
            "repair. Try device.dtype=bfloat16 or float32, or fewer LoRA/conditioning extremes.")
    retried = _decode_float32(pipe, latents)
    if not usable(retried):
        raise GenerationFailed("the decoded image is NaN or all black even with the VAE in float32.")
    return retried, {"decode_retried_fp32": True}


@torch.no_grad()
def _decode_float32(pipe, latents) -> np.ndarray:
    vae = pipe.vae
    dtype = vae.dtype
    vae.to(torch.float32)
    try:
        image = vae.decode(latents.to(torch.float32), return_dict=False)[0]
    finally:
        vae.to(dtype)
    return pipe.image_processor.postprocess(image, output_type="np")
