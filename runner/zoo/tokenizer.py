"""The CLIP tokenizers of the tiny twins: a byte-level BPE vocabulary of bytes and common English
letter pairs, written in the real `tokenizer/` folder format (vocab.json, merges.txt)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

# Common English letter pairs: each becomes a mid-word and an end-of-word BPE merge.
TOKENIZER_PAIRS = (
    "th he in er an re on at en nd ti es or te of ed is it al ar st to nt ng se ha as ou io "
    "le ve co me de hi ri ro ic ne ea ra ce li ch ll be ma si om ur ca el ta la ns ge ly ei"
).split()


def _byte_symbols() -> list[str]:
    """GPT-2/CLIP byte-to-unicode table, in CLIP's vocabulary order."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(len(others))]


def bpe_merges() -> list[tuple[str, str]]:
    return [(a, b + suffix) for a, b in TOKENIZER_PAIRS for suffix in ("", "</w>")]


def bpe_vocab() -> dict[str, int]:
    """CLIP's layout: bytes, bytes + '</w>', one token per merge, then the two specials."""
    symbols = _byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + [a + b for a, b in bpe_merges()]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: index for index, token in enumerate(tokens)}


def write_tokenizers(pipeline_dir: Path) -> None:
    """Write both CLIP tokenizers as the SDXL repo ships them (vocab.json, merges.txt, configs).

    Written by hand rather than by save_pretrained, whose output varies across versions.
    """
    for name, pad_token in (("tokenizer", "<|endoftext|>"), ("tokenizer_2", "!")):
        folder = pipeline_dir / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        write_tokenizer(folder, pad_token)


def write_tokenizer(folder: Path, pad_token: str = "<|endoftext|>") -> None:
    """One CLIP tokenizer's files in `folder`."""
    (folder / "vocab.json").write_text(json.dumps(bpe_vocab(), ensure_ascii=False) + "\n")
    merges = "".join(f"{a} {b}\n" for a, b in bpe_merges())
    (folder / "merges.txt").write_text("#version: 0.2\n" + merges)
    specials = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": pad_token,
    }
    config = {
        **specials,
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "do_lower_case": True,
        "clean_up_tokenization_spaces": True,
        "errors": "replace",
        "add_prefix_space": False,
    }
    _write_json(folder / "special_tokens_map.json", specials)
    _write_json(folder / "tokenizer_config.json", config)


def _write_json(path: Path, content: dict) -> None:
    path.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")
