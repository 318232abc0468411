"""Bakes a model's weights into torch's hub cache at image build time (the Dockerfile's
weights stage runs `python -m app.model.bake MODEL WEIGHTS [--from DIR]`).

Three sources, chosen by the build:

- a weights name (`DEFAULT`, `IMAGENET1K_V1`, ...) with no local file: torchvision downloads
  it into `$TORCH_HOME/hub/checkpoints`, checking the hash in its file name;
- the same name with `--from DIR` holding the file (offline builds: `docker build
  --build-context weights-file=DIR`): copied under torchvision's cache name after the same
  hash check, so a wrong or truncated file fails the build instead of the pod;
- `random`: nothing is baked, and the image serves random weights (smoke runs and clusters
  with no way to obtain the real ones), which /ready and the model_info metric report.

At run time the app's own resolution (`app.model.weights.resolve_weights`) finds the baked file.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

from app.model.ir.manifest import file_sha256
from app.model.weights import (
    RANDOM,
    STATE_DICT_SUFFIXES,
    file_name,
    hub_checkpoint_dir,
    named_weights,
    weights_enum,
)

# torch.hub's rule: the hex digits after the last '-' of the file name are a sha256 prefix.
_HASH_IN_NAME = re.compile(r"-([a-f0-9]+)\.")


class BakeError(RuntimeError):
    """The weights cannot be baked as asked: the build stops with this message."""


def _local_file(directory: Path, expected_name: str) -> Path | None:
    """The state dict in DIR: the file with torchvision's name, else the only .pth/.pt file."""
    if not directory.is_dir():
        return None
    named = directory / expected_name
    if named.is_file():
        return named
    candidates = sorted(p for p in directory.iterdir() if p.suffix in STATE_DICT_SUFFIXES)
    if len(candidates) > 1:
        names = ", ".join(p.name for p in candidates)
        raise BakeError(f"several weights files in {directory} ({names}); name one {expected_name}")
    return candidates[0] if candidates else None


def bake(model_name: str, spec: str, *, local_dir: Path | None = None) -> str:
    """Put the weights where the app looks; returns a one-line account of what was done."""
    if spec.lower() == RANDOM:
        return f"no weights baked for {model_name}: the image serves random weights"
    weights = named_weights(weights_enum(model_name), spec)
    name = file_name(weights)
    destination = hub_checkpoint_dir() / name
    local = _local_file(local_dir, name) if local_dir is not None else None
    if local is None:
        weights.get_state_dict(progress=False, check_hash=True)
        return f"baked {weights} downloaded from {weights.url}"
    match = _HASH_IN_NAME.search(name)
    actual = file_sha256(local)
    if match is None or not actual.startswith(match.group(1)):
        raise BakeError(
            f"{local} is not {weights} (sha256 {actual[:12]}..., torchvision's file {name} "
            "says otherwise): pass the file torchvision publishes for these weights"
        )
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(local, destination)
    return f"baked {weights} from {local.name} (sha256 {actual[:12]}... checked)"


def weights_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """MODEL, WEIGHTS and --from, as the bake and the build-time model both take them."""
    parser.add_argument("model", help="torchvision architecture, e.g. resnet50")
    parser.add_argument("weights", help="weights name (DEFAULT, IMAGENET1K_V1, ...) or random")
    parser.add_argument(
        "--from",
        dest="local_dir",
        type=Path,
        default=None,
        help="directory holding the weights file (offline builds)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.model.bake", description=__doc__)
    args = weights_arguments(parser).parse_args(argv)
    try:
        print(bake(args.model, args.weights, local_dir=args.local_dir))
    except Exception as exc:  # BakeError, or torchvision's download error: one clear line
        print(f"weights_bake: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
