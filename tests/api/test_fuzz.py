"""Schemathesis against the app's own OpenAPI document, every operation, valid and invalid
inputs, over a real socket: never a server fault, and every answer conforms to the document
(status codes, content types, response schemas, headers).

A server fault is any 5xx except the two gateway answers about a third party: 502/504 with
`url_fetch_failed` / `url_fetch_timeout` when a fuzzed URL cannot be fetched (these machines
have no internet, so every well-formed URL ends there). `positive_data_acceptance` is left out:
random bytes are schema-valid `binary` but are not images, and refusing them is correct.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import positive_data_acceptance

from helpers.process import ManagedProcess

UPSTREAM_CODES = frozenset({"url_fetch_failed", "url_fetch_timeout"})
EXAMPLES_PER_OPERATION = 30


def _error_code(response: Any) -> str | None:
    try:
        code = response.json()["error"]["code"]
    except Exception:
        return None
    return code if isinstance(code, str) else None


@schemathesis.check
def no_server_fault(ctx: Any, response: Any, case: Any) -> bool | None:
    if response.status_code >= 500:
        upstream = response.status_code in (502, 504) and _error_code(response) in UPSTREAM_CODES
        if not upstream:
            raise AssertionError(f"server fault {response.status_code}: {response.text[:300]}")
    return None


def _operations(base_url: str) -> list[Any]:
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"the OpenAPI document has an invalid operation: {result}"
        operations.append(result.ok())
    return operations


@pytest.mark.slow
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_operation_survives_fuzzing(server: ManagedProcess, mode: GenerationMode) -> None:
    operations = _operations(server.base_url)
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= {
        "POST /predict", "POST /predict/batch", "GET /health", "GET /ready", "GET /metrics",
        "GET /model", "GET /model/labels",
    }  # fmt: skip
    failures = []
    for operation in operations:

        @given(operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            case.call_and_validate(
                base_url=server.base_url,
                excluded_checks=[positive_data_acceptance, not_a_server_error],
                additional_checks=[no_server_fault],
                timeout=30,
            )

        try:
            run()
        except Unsatisfiable:
            # No parameters and no body (GET /health): there is no invalid request to make.
            assert mode is GenerationMode.NEGATIVE, operation.path
        except Exception as exc:  # collect all operations' findings, then fail once
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert not failures, "\n\n".join(failures)
    # The server is still healthy after the barrage.
    assert httpx.get(f"{server.base_url}/ready", timeout=5).status_code == 200
