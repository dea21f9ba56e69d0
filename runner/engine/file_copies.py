"""Copies of weights that are views of a memory-mapped file, read from the file instead of through
the mapping.

Weights loaded from safetensors on the CPU are views of the file, mapped into the process.
`tensor.clone()` reads through the mapping, which maps each page of the file into the process; they
stay resident beside the copy until the file's last tensor is gone. Copying full-size SDXL's UNet
out of its file that way (runner.engine.lora copies a model before fusing a LoRA into it) peaked at 20.5
GiB resident, 10 GiB of it the file's pages. Read with `os.preadv` at the tensor's offset in the
file, the same bytes come through the page cache and nothing is mapped.

That is exact only where the mapping still shows the file: a page of a private mapping that was
written since it was mapped holds other bytes than the file. /proc/self/smaps says whether any page
was (written pages of a private mapping are counted as Anonymous; Private_Dirty also counts the file's
own pages not yet flushed to disk), and a file replaced or removed since it was mapped shows as
"(deleted)". Anything else — a written or replaced file, memory that is not a file mapping, a tensor
that is not one contiguous view of one mapping, a system without /proc — is copied in memory.

Every copy keeps its source's address modulo ALIGNMENT. CPU kernels take different paths (and round
differently) for operands at different alignments, and a weight mapped from a file sits at the
file's offset, not on the allocator's 64-byte boundary: a copy that moved it would make a job's
pixels depend on whether an earlier job in the process had copied the model.
"""
from __future__ import annotations

import bisect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

SMAPS = Path("/proc/self/smaps")
# Smaller tensors are copied in memory: their pages are few, and reading the mappings costs ~20 ms a batch.
READ_FROM_FILE_FROM = 1 << 20  # bytes
# A page: what a mapping's placement fixes of a tensor's address, and more than any kernel looks at.
ALIGNMENT = 4096


@dataclass(frozen=True)
class _Mapping:
    start: int
    end: int
    offset: int  # of `start`, in the file
    path: str


class FileCopies:
    """Copies of tensors, read from their files where they are clean views of a mapped one. Made
    for one batch of copies: the mappings are read once, at its first tensor of
    READ_FROM_FILE_FROM bytes or more."""

    def __init__(self) -> None:
        self._mappings: Optional[List[_Mapping]] = None  # read at the first large tensor
        self._starts: List[int] = []
        self._files: Dict[str, Optional[int]] = {}

    def copy(self, tensor: Any) -> Any:
        """A copy of `tensor` in memory of its own, equal to it."""
        mapping = self._holding(tensor)
        if mapping is None:
            return empty_aligned_like(tensor).copy_(tensor)
        return self._copied(mapping, tensor)

    def copy_into(self, destination: Any, source: Any) -> None:
        """`destination.copy_(source)`, reading `source` from its file where it can."""
        mapping = self._holding(source)
        if mapping is None:
            destination.copy_(source)
        elif not (destination.device.type == "cpu" and destination.is_contiguous() and destination.dtype == source.dtype
                  and destination.shape == source.shape and self._read(mapping, source, destination)):
            destination.copy_(self._copied(mapping, source))  # read into memory of its own: the mapping stays unread

    def _copied(self, mapping: _Mapping, tensor: Any) -> Any:
        copy = empty_aligned_like(tensor)
        return copy if self._read(mapping, tensor, copy) else copy.copy_(tensor)

    def _read(self, mapping: _Mapping, tensor: Any, target: Any) -> bool:
        """Read `tensor`'s bytes from the file `mapping` maps into `target` (contiguous, on the CPU, of
        its size); False where the file cannot be read."""
        descriptor = self._open(mapping)
        if descriptor is None:
            return False
        buffer = memoryview(target.view(-1).view(torch.uint8).numpy())
        position = mapping.offset + tensor.data_ptr() - mapping.start
        while buffer:
            count = os.preadv(descriptor, [buffer], position)
            if count <= 0:  # the file is shorter than its mapping said
                return False
            buffer, position = buffer[count:], position + count
        return True

    def close(self) -> None:
        for descriptor in self._files.values():
            if descriptor is not None:
                os.close(descriptor)
        self._files.clear()

    def __enter__(self) -> "FileCopies":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _holding(self, tensor: Any) -> Optional[_Mapping]:
        size = tensor.numel() * tensor.element_size()
        if tensor.device.type != "cpu" or not tensor.is_contiguous() or size < max(1, READ_FROM_FILE_FROM):
            return None
        if self._mappings is None:
            self._mappings = _clean_file_mappings()
            self._starts = [mapping.start for mapping in self._mappings]
        index = bisect.bisect_right(self._starts, tensor.data_ptr()) - 1
        if index < 0:
            return None
        mapping = self._mappings[index]
        return mapping if tensor.data_ptr() + size <= mapping.end else None

    def _open(self, mapping: _Mapping) -> Optional[int]:
        if mapping.path not in self._files:
            try:
                self._files[mapping.path] = os.open(mapping.path, os.O_RDONLY)
            except OSError:
                self._files[mapping.path] = None
        return self._files[mapping.path]


def empty_aligned_like(tensor: Any) -> Any:
    """An uninitialised tensor like `torch.empty_like(tensor)` (its memory format kept) whose
    address equals `tensor`'s modulo ALIGNMENT (on the CPU; elsewhere a plain `empty_like`)."""
    if tensor.device.type != "cpu":
        return torch.empty_like(tensor)
    strides = torch.empty_like(tensor, device="meta").stride()  # a dense layout, as empty_like keeps it
    size = tensor.numel() * tensor.element_size()
    buffer = torch.empty(size + ALIGNMENT, dtype=torch.uint8)
    start = (tensor.data_ptr() - buffer.data_ptr()) % ALIGNMENT
    return buffer[start:start + size].view(tensor.dtype).as_strided(tensor.shape, strides)


def _clean_file_mappings() -> List[_Mapping]:
    """This process's mappings of regular files in which no page was written, by start address."""
    try:
        lines = SMAPS.read_text().splitlines()
    except OSError:
        return []
    mappings, current, written = [], None, False
    for line in lines + ["0-0 ---p 0 00:00 0"]:  # a last header closes the last mapping
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5 and ":" in fields[3]:  # a mapping's header
            if current is not None and not written:
                mappings.append(current)
            start, end = (int(bound, 16) for bound in fields[0].split("-"))
            path = " ".join(fields[5:])
            regular = int(fields[4]) != 0 and path.startswith("/") and not path.endswith("(deleted)")
            current = _Mapping(start, end, int(fields[2], 16), path) if regular else None
            written = False
        elif fields[0] == "Anonymous:" and int(fields[1]) > 0:  # a written page of a private mapping
            written = True
    return sorted(mappings, key=lambda mapping: mapping.start)

