"""`lcm-models [DIR]`: what an AUTOMATIC1111 or ComfyUI models folder holds, by kind, with sizes —
the bare names `model.source`, `lora.<name>.source`, `conditioning.model.source` and `model.vae` may
use with `paths.models=DIR` (or LCM_RUNNER_MODELS). Torch-free."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from runner.config import models_root
from runner.errors import EXIT_BAD_INPUT, EXIT_OK, UserError


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="lcm-models",
        description="List the checkpoints, LoRAs, ControlNets and VAEs of an AUTOMATIC1111 or ComfyUI models "
                    "folder: the names a weight reference may use with paths.models=DIR.")
    parser.add_argument("models_dir", nargs="?", help=f"the models folder (default: ${models_root.ENV_VAR})")
    args = parser.parse_args(argv)
    folder = args.models_dir or os.environ.get(models_root.ENV_VAR)
    try:
        if not folder:
            raise UserError(f"no models folder: pass one (lcm-models DIR) or set {models_root.ENV_VAR}.")
        root = models_root.open_root(args.models_dir and "DIR" or models_root.ENV_VAR, folder)
    except UserError as error:
        print(f"lcm-models: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"{root.root} ({root.layout} layout)")
    for kind in models_root.KINDS:
        where = root.folder(kind)
        if where is None:
            continue
        entries = root.entries(kind)
        print(f"\n{kind} ({len(entries)}, in {where.name}/)")
        width = max((len(str(e.path.relative_to(where))) for e in entries), default=0)
        for entry in entries:
            print(f"  {str(entry.path.relative_to(where)):<{width}}  {human_size(entry.size):>9}")
    return EXIT_OK


def human_size(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


if __name__ == "__main__":
    sys.exit(main())
