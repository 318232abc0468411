"""The one place tests find an external tool: helm, helm-unittest, kubeconform, actionlint,
shellcheck, hadolint, promtool, prometheus, nginx, kubectl, docker.

Where it looks, first hit wins:
1. .tools/bin: the versions scripts/install.sh pins (helm, helm-unittest, kubeconform, ...);
2. the running interpreter's environment (the venv's bin: hadolint and other pip tools);
3. PATH, then /usr/bin, /usr/sbin and /sbin (Debian's nginx is in /usr/sbin, outside a normal
   user's PATH; promtool and prometheus come from the Debian package);
4. last, .tools/cluster/bin: what scripts/cluster.sh built for the local cluster. Last because
   its prometheus (3.x, for the in-cluster monitoring) is not the Debian 2.x that the
   monitoring tests run, and nothing else of it is a test tool where the machine has its own.

A missing tool fails the test with its name and how to install it; it never skips. The README's
test command promises these checks, and a skip would let a machine without the tool report
green. (Tests that need something optional by design, such as a cluster or the real weights,
are gated by their own markers, not by this.)
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INSTALL_HINT = "run scripts/install.sh"
SYSTEM_DIRS = ("/usr/bin", "/usr/sbin", "/sbin")


def search_path() -> str:
    # Not resolved: the venv's python links to the base interpreter; its own bin is wanted.
    venv = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "").split(os.pathsep)
    dirs = [str(ROOT / ".tools" / "bin"), venv, *path, *SYSTEM_DIRS]
    dirs.append(str(ROOT / ".tools" / "cluster" / "bin"))
    return os.pathsep.join(d for d in dirs if d)


def find_tool(name: str) -> Path | None:
    """The tool's path, or None where it is not installed."""
    found = shutil.which(name, path=search_path())
    return Path(found) if found else None


def tool(name: str, *, hint: str = INSTALL_HINT) -> Path:
    """The tool's path; fails the calling test (no traceback) where it is not installed."""
    found = find_tool(name)
    if found is None:
        pytest.fail(f"{name} is not installed: {hint}", pytrace=False)
    return found
