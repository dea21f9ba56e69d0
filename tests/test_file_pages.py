"""runner.file_pages: a copied tensor of a memory-mapped weight file hands its pages back, and no
tensor ever loses a value to the advice."""
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from runner.file_pages import page_out

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="MADV_PAGEOUT and /proc are Linux's")


def resident_kib(path):
    """This process's resident memory mapped from the file at `path` (/proc/self/smaps)."""
    total, inside = 0, False
    for line in open("/proc/self/smaps"):
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
            inside = len(fields) >= 6 and fields[5] == str(path)
        elif inside and fields[0] == "Rss:":
            total += int(fields[1])
    return total


@linux_only
def test_a_copied_mapped_tensor_hands_back_its_pages_and_keeps_its_values(tmp_path):
    path = (tmp_path / "weights.safetensors").resolve()
    save_file({"weight": torch.randn(1024, 1024)}, path)  # 4 MiB
    mapped = load_file(path)["weight"]  # a view of the file, as diffusers loads weights
    copy = mapped.clone()  # reads every page in
    assert resident_kib(path) >= 4000
    assert page_out(mapped)
    assert resident_kib(path) < 100
    assert torch.equal(mapped, copy), "read again from the file"


@linux_only
def test_anonymous_memory_keeps_its_values():
    tensor = torch.randn(1 << 20)
    tensor.mul_(2)  # written: nothing in any file holds these values
    expected = tensor.clone()
    page_out(tensor)
    assert torch.equal(tensor, expected)


def test_nothing_happens_off_the_cpu_or_for_an_empty_tensor():
    assert page_out(torch.empty(0)) is False
    assert page_out(torch.empty(4, device="meta")) is False
