"""Check that one platform of a multi-platform OCI archive is the image the build job tested: the
same layers (rootfs diff_ids, the digests of the uncompressed layers), in the same order.

The publish job rebuilds the CPU image for linux/amd64 and linux/arm64 from the build job's
layer cache; before it pushes, this proves the amd64 half is the smoke-tested, scanned image and
not a rebuild (a cache miss rebuilds layers with other bytes).

    docker image inspect --format '{{json .RootFS.Layers}}' resnet-serving:ci > tested.json
    python3 .github/scripts/same_layers.py cpu.oci.tar linux/amd64 tested.json

Exit status 0 when the layers are the same, 1 with what differs otherwise, 2 when the archive
has no such platform. Standard library only: it runs on a bare CI runner.
"""

from __future__ import annotations

import argparse
import json
import sys
import tarfile
from pathlib import Path
from typing import Any

INDEX_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}


def read_blob(archive: tarfile.TarFile, digest: str) -> Any:
    algorithm, _, hexdigest = digest.partition(":")
    member = archive.extractfile(f"blobs/{algorithm}/{hexdigest}")
    if member is None:
        raise KeyError(digest)
    return json.loads(member.read())


def platform_of(descriptor: dict[str, Any]) -> str:
    platform = descriptor.get("platform") or {}
    name = f"{platform.get('os', '?')}/{platform.get('architecture', '?')}"
    return f"{name}/{platform['variant']}" if platform.get("variant") else name


def manifests(archive: tarfile.TarFile, index: dict[str, Any]) -> list[dict[str, Any]]:
    """The image manifest descriptors below an index, nested indexes followed."""
    found: list[dict[str, Any]] = []
    for descriptor in index.get("manifests", []):
        if descriptor.get("mediaType") in INDEX_TYPES:
            found += manifests(archive, read_blob(archive, descriptor["digest"]))
        else:
            found.append(descriptor)
    return found


def diff_ids(archive_path: Path, platform: str) -> list[str] | None:
    """The platform's layer diff_ids in the OCI archive; None when it has no such platform."""
    with tarfile.open(archive_path) as archive:
        member = archive.extractfile("index.json")
        if member is None:
            raise KeyError("index.json")
        for descriptor in manifests(archive, json.loads(member.read())):
            if platform_of(descriptor) == platform:
                manifest = read_blob(archive, descriptor["digest"])
                config = read_blob(archive, manifest["config"]["digest"])
                layers: list[str] = config["rootfs"]["diff_ids"]
                return layers
    return None


def compare(expected: list[str], actual: list[str]) -> list[str]:
    """What differs, as sentences; empty when the layer lists are equal."""
    if expected == actual:
        return []
    problems = [f"{len(actual)} layers, the tested image has {len(expected)}"]
    for position, (want, got) in enumerate(zip(expected, actual, strict=False)):
        if want != got:
            problems.append(f"layer {position} is {got}, the tested image's is {want}")
            break
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archive", type=Path, help="OCI archive (buildx type=oci output)")
    parser.add_argument("platform", help="os/architecture, e.g. linux/amd64")
    parser.add_argument("tested", type=Path, help="JSON list of the tested image's diff_ids")
    args = parser.parse_args(argv)

    expected = json.loads(args.tested.read_text())
    actual = diff_ids(args.archive, args.platform)
    if actual is None:
        print(f"same_layers: no {args.platform} image in {args.archive}", file=sys.stderr)
        return 2
    problems = compare(expected, actual)
    for problem in problems:
        print(f"same_layers: FAIL: {args.platform}: {problem}", file=sys.stderr)
    if not problems:
        print(f"same_layers: ok: {args.platform} has the tested image's {len(actual)} layers")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
