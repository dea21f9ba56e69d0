"""A pipeline's VAE decode, changed for one call: `vae.decode` replaced by a wrapper of it (an
instance attribute, taken away again), whatever pipeline class makes the call."""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Optional, Sequence

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
