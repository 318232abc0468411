"""Write the real photograph the CI checks predict on: grace_hopper.jpg from matplotlib's
sample data (Grace Hopper in US Navy uniform; ResNet-50 ranks "military uniform" in its top 5).

It comes out of the matplotlib wheel that requirements/dev-pypi.txt locks (downloaded with pip,
its sha256 checked against the lock's, never installed), or out of an installed matplotlib of that
version when there is one.

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


def pinned_matplotlib(lock: Path) -> tuple[str, list[str]]:
    """matplotlib's version and sha256 hashes in a hash-locked requirements file."""
    match = re.search(
        r"^matplotlib==(\S+) \\\n((?:[ \t]+--hash=sha256:[0-9a-f]{64}(?: \\)?\n)+)",
        lock.read_text(),
        re.MULTILINE,
    )
    if match is None:
        raise SystemExit(f"sample_photo: no hash-locked matplotlib in {lock}")
    return match.group(1), re.findall(r"sha256:([0-9a-f]{64})", match.group(2))


def from_installed(version: str) -> bytes | None:
    try:
        dist = metadata.distribution("matplotlib")
    except metadata.PackageNotFoundError:
        return None
    if dist.version != version:
        return None
    path = Path(str(dist.locate_file(MEMBER)))
    return path.read_bytes() if path.is_file() else None


def from_wheel(version: str, hashes: list[str]) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        requirement = Path(tmp) / "requirements.txt"
        requirement.write_text(
            f"matplotlib=={version} " + " ".join(f"--hash=sha256:{h}" for h in hashes) + "\n"
        )
        subprocess.run(  # noqa: S603 - fixed argv: this interpreter's pip, a hash-locked pin
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary=:all:",
                "--require-hashes",
                "--dest",
                tmp,
                "-r",
                str(requirement),
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
    parser.add_argument("--lock", type=Path, default=ROOT / "requirements" / "dev-pypi.txt")
    args = parser.parse_args(argv)
    version, hashes = pinned_matplotlib(args.lock)
    data = from_installed(version) or from_wheel(version, hashes)
    if not data.startswith(b"\xff\xd8"):
        raise SystemExit("sample_photo: the extracted file is not a JPEG")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(data)
    print(f"sample_photo: {args.out} ({len(data)} bytes, matplotlib {version})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
