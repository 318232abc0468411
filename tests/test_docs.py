"""The docs that are derived from code stay equal to it."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys

from fastapi.testclient import TestClient

import app.errors as errors
from conftest import ROOT

README = ROOT / "README.md"
API_MD = ROOT / "docs" / "API.md"


def generated(mode: str) -> str:
    return subprocess.run(
        [sys.executable, "scripts/settings_table.py", mode],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_readme_settings_table_is_the_generated_one() -> None:
    text = README.read_text()
    match = re.search(
        r"<!-- settings-table:start.*?-->\n(.*?)<!-- settings-table:end -->", text, re.S
    )
    assert match, "README lost its settings-table markers"
    assert match.group(1) == generated("markdown"), (
        "README settings table is stale: python scripts/settings_table.py markdown"
    )


def test_env_example_is_the_generated_one() -> None:
    assert (ROOT / ".env.example").read_text() == generated("env"), (
        ".env.example is stale: python scripts/settings_table.py env > .env.example"
    )


def test_every_error_code_is_in_the_api_doc() -> None:
    text = API_MD.read_text()
    codes = {
        cls.code
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.ServingError) and cls is not errors.ServingError
    }
    codes |= {"not_found", "method_not_allowed", "internal_error"}
    for code in sorted(codes):
        assert re.search(rf"\| `{code}` \|", text), f"error code {code} missing from docs/API.md"


def test_every_route_is_in_the_api_doc(client: TestClient) -> None:
    text = API_MD.read_text()
    for path, methods in client.get("/openapi.json").json()["paths"].items():
        for method in methods:
            assert f"`{method.upper()} {path}`" in text, f"{method.upper()} {path} undocumented"


def test_troubleshooting_explains_refusals_drain_and_auth() -> None:
    text = (ROOT / "docs" / "TROUBLESHOOTING.md").read_text()
    behaviours = text.split("<!-- other-sections:start -->", 1)[1]
    for needle in (
        "`overloaded`", "`deadline_exceeded`", "`draining`", "`unauthorized`",
        "SERVING_MAX_QUEUE_SIZE", "SERVING_GRACEFUL_TIMEOUT_S", "SERVING_API_KEYS",
        "Retry-After", "X-Request-Timeout",
    ):  # fmt: skip
        assert needle in behaviours, needle
