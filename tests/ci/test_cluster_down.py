"""scripts/cluster.sh down frees the kubelet's volume mounts even when the checkout's .tools is a
symlink (to a larger disk, say): /proc/mounts lists the mounts under the resolved path, which
`down` must compare them with. Real tmpfs mounts (root only), removed by the part of `down`
that handles them (remove_run_dir in scripts/cluster/node.sh); the rest of `down` stops
daemons, containers and the CNI bridge of this machine, which a test must not touch."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0,
    reason="mounts tmpfs filesystems like the kubelet does: needs root",
)

# Where the kubelet mounts a pod's volumes, relative to the cluster's run/ directory.
VOLUMES = [
    "kubelet/pods/0f6c1d2e/volumes/kubernetes.io~projected/kube-api-access-x7k2p",
    "kubelet/pods/0f6c1d2e/volumes/kubernetes.io~empty-dir/cache",
    # A mount inside a mount: the inner one must go first.
    "kubelet/pods/0f6c1d2e/volumes/kubernetes.io~empty-dir/cache/nested",
]


def mounts_under(path: Path) -> list[str]:
    prefix = f"{path}/"
    with open("/proc/mounts") as f:
        return [fields[1] for line in f if (fields := line.split())[1].startswith(prefix)]


@pytest.fixture
def checkout(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A checkout-like dir whose .tools is a symlink to another dir (the "larger disk"); yields
    (checkout, resolved .tools). Whatever stays mounted under it is unmounted afterwards, also
    when the test fails."""
    disk = (tmp_path / "disk").resolve()
    disk.mkdir()
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / ".tools").symlink_to(disk, target_is_directory=True)
    yield repo, disk
    for mount in sorted(mounts_under(tmp_path.resolve()), reverse=True):
        subprocess.run(["umount", "-l", mount], check=False)


def mount_volumes(run: Path) -> None:
    """Mounts a tmpfs on every VOLUMES path under run/ (reached through the symlink, as the
    kubelet reaches its --root-dir), each holding a file, as a token volume does."""
    for volume in VOLUMES:
        target = run / volume
        target.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(target)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            pytest.skip(f"cannot mount tmpfs here: {result.stderr.strip()}")
        (target / "token").write_text("secret")


def remove_run_dir(repo: Path, cluster_dir: str | None = None) -> subprocess.CompletedProcess[str]:
    """Sources scripts/cluster/lib.sh and node.sh as scripts/cluster.sh does (ROOT = the
    checkout, CLUSTER_DIR from the environment when given) and calls remove_run_dir."""
    env = {k: v for k, v in os.environ.items() if k != "CLUSTER_DIR"}
    if cluster_dir is not None:
        env["CLUSTER_DIR"] = cluster_dir
    script = (
        "set -euo pipefail\n"
        f'ROOT="{repo}"\n'
        f'source "{ROOT}/scripts/cluster/lib.sh"\n'
        f'source "{ROOT}/scripts/cluster/node.sh"\n'
        "remove_run_dir\n"
    )
    return subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, env=env, timeout=60
    )


@pytest.mark.parametrize("via", ["root", "cluster_dir"])
def test_down_unmounts_the_kubelet_volumes_through_a_symlinked_tools_dir(
    checkout: tuple[Path, Path], via: str
) -> None:
    repo, disk = checkout
    mount_volumes(repo / ".tools" / "cluster" / "run")
    # The kernel lists them under the resolved path, not the one they were mounted through.
    resolved_run = disk / "cluster" / "run"
    assert len(mounts_under(resolved_run)) == len(VOLUMES)

    cluster_dir = str(repo / ".tools" / "cluster") if via == "cluster_dir" else None
    result = remove_run_dir(repo, cluster_dir)

    assert result.returncode == 0, result.stderr
    assert mounts_under(resolved_run) == []
    assert not resolved_run.exists()
    # Only run/ goes: the cluster dir (bin/, logs/) and the symlink stay.
    assert (disk / "cluster").is_dir()
    assert (repo / ".tools").is_symlink()
