"""Handing back the pages a tensor holds of a memory-mapped weight file, once it has been copied.

Weights loaded from safetensors on the CPU are views of the file, mapped into the process. Copying
them (runner.lora copies a model out of its file before fusing a LoRA into it) reads every page of
the file into the process, and they stay resident until the last tensor of the file is gone: copied
whole, full-size SDXL's UNet peaked at 20.5 GiB resident on the CPU, 10 GiB of it the file's pages.
Advised after each tensor's copy (Linux's MADV_PAGEOUT), the kernel drops them at once: 11.0 GiB.

The advice loses nothing, whatever memory the tensor holds: a clean page of a file is read again if
it is touched later, and any other page (anonymous, or written since it was mapped) is swapped out
or, without swap, kept. Elsewhere than Linux, or without the call, it does nothing.
"""
from __future__ import annotations

import ctypes
import mmap
import sys
from typing import Any, Callable, Optional

_PAGE = mmap.PAGESIZE
# Linux 5.4+ gives it the same number on every architecture; Python's mmap names it only when the
# headers it was built against had it.
_PAGEOUT = getattr(mmap, "MADV_PAGEOUT", 21)


def _madvise() -> Optional[Callable[[int, int, int], int]]:
    if not sys.platform.startswith("linux"):
        return None
    try:
        call = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    call.restype = ctypes.c_int
    return call


_MADVISE = _madvise()


def page_out(tensor: Any) -> bool:
    """Advise the kernel to drop the pages under `tensor`'s storage (CPU only). Returns whether the
    advice was given and taken."""
    storage = tensor.untyped_storage()
    if _MADVISE is None or tensor.device.type != "cpu" or storage.nbytes() == 0:
        return False
    start = storage.data_ptr() // _PAGE * _PAGE  # the call wants a page boundary
    return _MADVISE(start, storage.data_ptr() + storage.nbytes() - start, _PAGEOUT) == 0
