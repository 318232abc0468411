"""Fixtures of the container tests: the parsed Dockerfile.

Tools (hadolint, helm, promtool) come from scripts/install.sh: a missing one fails the test with
"run scripts/install.sh", never skips it, since the README's test command promises these checks.
"""

from __future__ import annotations

import pytest

from container.dockerkit import DOCKERFILE, Dockerfile, parse_dockerfile


@pytest.fixture(scope="session")
def dockerfile() -> Dockerfile:
    return parse_dockerfile(DOCKERFILE.read_text())
