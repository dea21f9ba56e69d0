"""runner.engine.file_copies: a copy of a memory-mapped weight equals it and maps none of the file; a
written, replaced or anonymous one is copied the usual way, and still equals it."""
import os
import sys

import pytest
import torch
from safetensors.torch import load, load_file, save_file

from runner.engine import file_copies
from runner.engine.file_copies import FileCopies

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux's /proc/self/smaps")


@pytest.fixture(autouse=True)
def every_size_read_from_its_file(monkeypatch):
    monkeypatch.setattr(file_copies, "READ_FROM_FILE_FROM", 1)


def resident_kib(path):
    """This process's resident memory mapped from the file at `path`."""
    total, inside = 0, False
    for line in open("/proc/self/smaps"):
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5 and ":" in fields[3]:
            inside = len(fields) >= 6 and fields[5] == str(path)
        elif inside and fields[0] == "Rss:":
            total += int(fields[1])
    return total


@pytest.fixture
def weights_file(tmp_path):
    path = (tmp_path / "weights.safetensors").resolve()
    generator = torch.Generator().manual_seed(0)
    save_file({"a": torch.randn(512, 1024, generator=generator), "b": torch.randn(7, generator=generator),
               "half": torch.randn(256, 256, generator=generator).to(torch.bfloat16)}, path)
    return path


def test_a_mapped_weight_is_read_from_its_file_without_mapping_it(weights_file):
    mapped = load_file(weights_file)  # views of the file, as diffusers loads weights on the CPU
    with FileCopies() as copies:
        copied = {name: copies.copy(tensor) for name, tensor in mapped.items()}
    assert resident_kib(weights_file) < 256, "read from the file, not through the mapping"
    for name, tensor in mapped.items():
        assert copied[name].dtype == tensor.dtype and torch.equal(copied[name], tensor), name
        assert copied[name].data_ptr() != tensor.data_ptr()


def test_a_written_mapping_is_copied_as_it_is_now(weights_file):
    mapped = load_file(weights_file)
    mapped["a"][0, 0] = 12345.0  # a private mapping's page now differs from the file
    with FileCopies() as copies:
        copied = copies.copy(mapped["a"])
    assert copied[0, 0] == 12345.0 and torch.equal(copied, mapped["a"])


def test_a_replaced_file_is_not_read(weights_file, tmp_path):
    mapped = load_file(weights_file)
    other = tmp_path / "other.safetensors"
    save_file({"a": torch.zeros(512, 1024), "b": torch.zeros(7), "half": torch.zeros(256, 256, dtype=torch.bfloat16)},
              other)
    os.replace(other, weights_file)  # same path, another file: the mapping still holds the old one
    with FileCopies() as copies:
        copied = copies.copy(mapped["a"])
    assert torch.equal(copied, mapped["a"]) and copied.abs().sum() > 0


def test_anything_else_is_cloned():
    anonymous = torch.randn(100, 100)
    with FileCopies() as copies:
        for tensor in (anonymous, anonymous.t(), torch.empty(0), torch.empty(3, device="meta")):
            copied = copies.copy(tensor)
            assert copied.shape == tensor.shape and copied.device == tensor.device
            if tensor.device.type == "cpu":
                assert torch.equal(copied, tensor)


def test_a_mapped_weight_is_read_into_another_tensor_without_mapping_it(weights_file):
    mapped = load_file(weights_file)
    kept = load(weights_file.read_bytes())  # read, not mapped
    into = {name: torch.zeros_like(tensor) for name, tensor in mapped.items()}
    transposed = torch.zeros(1024, 512).t()  # not contiguous: read into a copy of its own first
    with FileCopies() as copies:
        for name, tensor in mapped.items():
            copies.copy_into(into[name], tensor)
        copies.copy_into(transposed, mapped["a"])
    assert resident_kib(weights_file) < 512
    assert all(torch.equal(into[name], kept[name]) for name in kept)
    assert torch.equal(transposed, kept["a"])


@pytest.mark.parametrize("read_from_file_from", [1, 1 << 40], ids=["read from the file", "copied in memory"])
def test_a_copy_keeps_its_sources_address_modulo_a_page(weights_file, monkeypatch, read_from_file_from):
    """CPU kernels round differently by operand alignment: a copy that moved a weight off its file
    offset made a job's pixels depend on whether an earlier job had copied the model."""
    monkeypatch.setattr(file_copies, "READ_FROM_FILE_FROM", read_from_file_from)
    mapped = load_file(weights_file)
    offsets = {name: tensor.data_ptr() % file_copies.ALIGNMENT for name, tensor in mapped.items()}
    assert any(offset % 64 for offset in offsets.values()), "safetensors places some tensors off 64-byte boundaries"
    with FileCopies() as copies:
        copied = {name: copies.copy(tensor) for name, tensor in mapped.items()}
    for name, tensor in mapped.items():
        assert copied[name].data_ptr() % file_copies.ALIGNMENT == offsets[name], name
        assert torch.equal(copied[name], tensor) and copied[name].is_contiguous(), name


def test_a_copy_keeps_its_sources_memory_format():
    held = torch.randn(4, 3, 5, 5).to(memory_format=torch.channels_last)
    with FileCopies() as copies:
        copied = copies.copy(held)
    assert copied.is_contiguous(memory_format=torch.channels_last) and torch.equal(copied, held)
