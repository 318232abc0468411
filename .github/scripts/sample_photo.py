"""Write the real photograph the CI checks predict on: grace_hopper.jpg from matplotlib's
sample data (Grace Hopper in US Navy uniform; ResNet-50 ranks "military uniform" in its top 5).

It comes out of the matplotlib wheel pinned in constraints.txt (downloaded with pip, never
installed), or out of an installed matplotlib of that version when there is one.

    python3 .github/scripts/sample_photo.py /tmp/grace_hopper.jpg
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MEMBER = "matplotlib/mpl-data/sample_data/grace_hopper.jpg"


def pinned_matplotlib(constraints: Path) -> str:
    match = re.search(r"^matplotlib==(\S+)$", constraints.read_text(), re.MULTILINE)
    if match is None:
        raise SystemExit(f"sample_photo: no matplotlib pin in {constraints}")
    return match.group(1)


def from_installed(version: str) -> bytes | None:
    try:
        dist = metadata.distribution("matplotlib")
    except metadata.PackageNotFoundError:
        return None
    if dist.version != version:
        return None
    path = Path(str(dist.locate_file(MEMBER)))
    return path.read_bytes() if path.is_file() else None


def from_wheel(version: str) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(  # noqa: S603 - fixed argv: this interpreter's pip, a pinned version
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary=:all:",
                "--dest",
                tmp,
                f"matplotlib=={version}",
            ],
            check=True,
        )
        wheels = sorted(Path(tmp).glob("matplotlib-*.whl"))
        if not wheels:
            raise SystemExit(f"sample_photo: pip downloaded no matplotlib {version} wheel")
        with zipfile.ZipFile(wheels[0]) as wheel:
            return wheel.read(MEMBER)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="where to write the JPEG")
    parser.add_argument("--constraints", type=Path, default=ROOT / "constraints.txt")
    args = parser.parse_args(argv)
    version = pinned_matplotlib(args.constraints)
    data = from_installed(version) or from_wheel(version)
    if not data.startswith(b"\xff\xd8"):
        raise SystemExit("sample_photo: the extracted file is not a JPEG")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(data)
    print(f"sample_photo: {args.out} ({len(data)} bytes, matplotlib {version})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
