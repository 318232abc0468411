"""The shadow comparison's parts on their own (app/shadow/): SERVING_SHADOW_* validation, the
target URL's grammar, sampling and the no-loop rule, the client against a mock transport, and
`Shadow` with a fake sender (agree, disagree, error, dropped, closing). The real two-process
runs are tests/shadow/test_with_processes.py."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable

import httpx
import pytest
from pydantic import ValidationError

from app.settings.config import Settings, describe_validation_error
from app.shadow.client import MAX_ANSWER_BYTES, ShadowAnswer, ShadowCallError, ShadowClient
from app.shadow.comparison import Result, Shadow, build_shadow, compare
from app.shadow.policy import ShadowPolicy, is_shadow_copy, parse_target, without_credentials
from app.telemetry.metrics import Metrics
from conftest import make_settings

TARGET = "http://canary.example:8000"


def policy(**changes: object) -> ShadowPolicy:
    values: dict[str, object] = {"url": TARGET, "percent": 100.0, "concurrency": 4,
                                 "timeout_s": 5.0}  # fmt: skip
    values.update(changes)
    return ShadowPolicy(**values)  # type: ignore[arg-type]


def counts(metrics: Metrics) -> dict[str, float | None]:
    return {
        r.value: metrics.sample_value("shadow_comparisons_total", {"result": r.value})
        for r in Result
    }


# --- settings ---------------------------------------------------------------------------------


def test_defaults_are_off() -> None:
    s = Settings(_env_file=None)
    assert (s.shadow_url, s.shadow_percent, s.shadow_concurrency, s.shadow_timeout_s) == (
        "", 0.0, 4, 5.0,
    )  # fmt: skip
    assert ShadowPolicy.from_settings(s) is None


def test_settings_make_the_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "SERVING_SHADOW_URL": f" {TARGET}/ ",
        "SERVING_SHADOW_PERCENT": "12.5",
        "SERVING_SHADOW_CONCURRENCY": "2",
        "SERVING_SHADOW_TIMEOUT_S": "0.5",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert ShadowPolicy.from_settings(Settings(_env_file=None)) == ShadowPolicy(
        TARGET, 12.5, 2, 0.5
    )


@pytest.mark.parametrize(
    ("env", "value"),
    [
        ("SERVING_SHADOW_URL", "canary:8000"),
        ("SERVING_SHADOW_URL", "ftp://canary:8000"),
        ("SERVING_SHADOW_URL", "http://"),
        ("SERVING_SHADOW_URL", "http://canary:99999"),
        ("SERVING_SHADOW_URL", "http://canary:8000/?x=1"),
        ("SERVING_SHADOW_URL", "http://canary:8000/#top"),
        ("SERVING_SHADOW_URL", "http://can ary:8000"),
        ("SERVING_SHADOW_PERCENT", "101"),
        ("SERVING_SHADOW_PERCENT", "-1"),
        ("SERVING_SHADOW_PERCENT", "ten"),
        ("SERVING_SHADOW_CONCURRENCY", "0"),
        ("SERVING_SHADOW_TIMEOUT_S", "0"),
    ],
)
def test_bad_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ValidationError) as info:
        Settings(_env_file=None)
    line = describe_validation_error(info.value)
    assert line.startswith("invalid configuration: ")
    assert env in line


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        ("http://canary:8000", "http://canary:8000"),
        ("https://canary.example/", "https://canary.example"),
        ("http://10.0.0.7:8000/serving/v2/", "http://10.0.0.7:8000/serving/v2"),
        ("http://[::1]:8000", "http://[::1]:8000"),
        ("http://user:pw@canary:8000", "http://user:pw@canary:8000"),
    ],
)
def test_target_grammar(raw: str, parsed: str) -> None:
    assert parse_target(raw) == parsed
    assert policy(url=parsed).predict_url == f"{parsed}/predict"


def test_credentials_are_never_shown() -> None:
    assert without_credentials("http://user:pw@canary:8000/x") == "http://canary:8000/x"
    assert without_credentials(TARGET) == TARGET


# --- sampling and the no-loop rule ------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "copy"),
    [(None, False), ("", False), ("0", False), ("1", True), ("yes", True), (" 1 ", True)],
)
def test_what_counts_as_a_shadow_copy(header: str | None, copy: bool) -> None:
    assert is_shadow_copy(header) is copy
    assert policy(percent=100.0).wants(header, 0.0) is (not copy)


def test_sampling_follows_the_percentage() -> None:
    assert not policy(percent=0.0).wants(None, 0.0)
    assert policy(percent=100.0).wants(None, 0.999999)
    assert policy(percent=10.0).wants(None, 0.0999)
    assert not policy(percent=10.0).wants(None, 0.1)
    rng = random.Random(7)
    drawn = sum(policy(percent=25.0).wants(None, rng.random()) for _ in range(10_000))
    assert 2_000 < drawn < 3_000


# --- the client (a mock transport: what it sends, how it reads) -------------------------------


def prediction(class_id: object = 281) -> bytes:
    return json.dumps({"predictions": [{"label": "tabby", "class_id": class_id,
                                        "score": 0.5}]}).encode()  # fmt: skip


def client_for(
    handler: Callable[[httpx.Request], httpx.Response], **changes: object
) -> ShadowClient:
    return ShadowClient(policy(**changes), api_key="k" * 20, transport=httpx.MockTransport(handler))


@pytest.mark.anyio
async def test_the_client_sends_a_multipart_copy_and_reads_the_top1() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        request.read()
        seen.append(request)
        return httpx.Response(200, content=prediction(281), headers={"X-Model-Version": "v2"})

    client = client_for(handler, url="http://user:pw@canary:8000/base")
    assert await client.predict(b"\xff\xd8jpeg-bytes", "rid-1") == ShadowAnswer(281, "v2")
    await client.aclose()
    [request] = seen
    assert request.method == "POST"
    assert request.url.path == "/base/predict"
    assert request.url.params["top_k"] == "1"
    assert request.headers["x-shadow"] == "1"
    assert request.headers["x-request-id"] == "rid-1"
    assert request.headers["x-api-key"] == "k" * 20  # this process's first API key
    assert request.headers["authorization"] == "Basic dXNlcjpwdw=="  # user:pw, for a proxy
    assert request.headers["content-type"].startswith("multipart/form-data")
    assert b'name="file"' in request.content
    assert b"\xff\xd8jpeg-bytes" in request.content


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(503, json={"error": {"code": "overloaded"}}),
        httpx.Response(401, json={"error": {"code": "unauthorized"}}),
        httpx.Response(200, content=b"<html>not json</html>"),
        httpx.Response(200, json={"predictions": []}),
        httpx.Response(200, content=prediction("281")),
        httpx.Response(200, content=prediction(True)),
        httpx.Response(200, content=b"x" * (MAX_ANSWER_BYTES + 1)),
        httpx.Response(302, headers={"Location": "http://elsewhere/"}),
    ],
    ids=[
        "503",
        "401",
        "not-json",
        "no-predictions",
        "class-id-text",
        "class-id-bool",
        "huge",
        "redirect",
    ],
)
@pytest.mark.anyio
async def test_anything_but_a_prediction_is_an_error(answer: httpx.Response) -> None:
    client = client_for(lambda request: answer)
    with pytest.raises(ShadowCallError):
        await client.predict(b"img", "rid")
    await client.aclose()


@pytest.mark.anyio
async def test_a_target_that_does_not_connect_or_answer_is_an_error() -> None:
    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client = client_for(refused)
    with pytest.raises(ShadowCallError, match="ConnectError"):
        await client.predict(b"img", "rid")
    await client.aclose()

    async def hangs(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(60)
        raise AssertionError("not reached")

    slow = ShadowClient(policy(timeout_s=0.05), transport=httpx.MockTransport(hangs))
    with pytest.raises(ShadowCallError, match="no answer within"):
        await slow.predict(b"img", "rid")
    await slow.aclose()


# --- Shadow: comparing, counting, bounding ----------------------------------------------------


class FakeSender:
    def __init__(self) -> None:
        self.top1: int | Exception = 5
        self.version: str | None = "v2"
        self.gate: asyncio.Event | None = None
        self.sent: list[tuple[bytes, str]] = []
        self.closed = False

    async def predict(self, data: bytes, request_id: str) -> ShadowAnswer:
        self.sent.append((data, request_id))
        if self.gate is not None:
            await self.gate.wait()
        if isinstance(self.top1, Exception):
            raise self.top1
        return ShadowAnswer(self.top1, self.version)

    async def aclose(self) -> None:
        self.closed = True


async def settle(shadow: Shadow) -> None:
    """Until every copy in flight has been answered and counted."""
    for _ in range(10_000):
        if not shadow.in_flight:
            return
        await asyncio.sleep(0.001)
    raise AssertionError("copies still in flight")


def test_compare_is_on_the_class_id() -> None:
    assert compare(3, 3) is Result.AGREE
    assert compare(3, 4) is Result.DISAGREE


def test_the_metrics_exist_only_where_shadowing_is_on() -> None:
    off = Metrics()
    assert build_shadow(make_settings(), off) is None
    names = {family.name for family in off.registry.collect()}
    assert not {n for n in names if n.startswith("shadow_")}
    on = Metrics(model_version="v1")
    shadow = build_shadow(make_settings(shadow_url=TARGET, shadow_percent=0), on)
    assert shadow is not None
    names = {family.name for family in on.registry.collect()}
    assert {"shadow_comparisons", "shadow_duration_seconds"} <= names
    assert counts(on) == {r.value: 0.0 for r in Result}  # every series, from the start
    asyncio.run(shadow.close())


@pytest.mark.anyio
async def test_agreements_disagreements_and_errors_are_counted() -> None:
    metrics, sender = Metrics(), FakeSender()
    shadow = Shadow(policy(), sender, metrics)
    assert shadow.describe()["version"] is None
    assert shadow.offer(b"a", top1=5, request_id="r1", shadow_header=None)
    await settle(shadow)
    assert shadow.offer(b"b", top1=6, request_id="r2", shadow_header=None)
    await settle(shadow)
    sender.top1 = ShadowCallError("answered 503")
    assert shadow.offer(b"c", top1=5, request_id="r3", shadow_header=None)
    await settle(shadow)
    sender.top1 = RuntimeError("a bug of ours")
    assert shadow.offer(b"d", top1=5, request_id="r4", shadow_header=None)
    await settle(shadow)
    assert counts(metrics) == {"agree": 1.0, "disagree": 1.0, "error": 2.0, "dropped": 0.0}
    assert metrics.sample_value("shadow_duration_seconds_count") == 4.0
    assert sender.sent == [(b"a", "r1"), (b"b", "r2"), (b"c", "r3"), (b"d", "r4")]
    assert shadow.describe() == {"url": TARGET, "percent": 100.0, "concurrency": 4,
                                 "timeout_s": 5.0, "in_flight": 0, "version": "v2"}  # fmt: skip
    await shadow.close()
    assert sender.closed


@pytest.mark.anyio
async def test_copies_beyond_the_concurrency_are_dropped_and_nothing_waits() -> None:
    metrics, sender = Metrics(), FakeSender()
    sender.gate = asyncio.Event()  # a target that does not answer
    shadow = Shadow(policy(concurrency=2), sender, metrics)
    offered = [shadow.offer(b"x", top1=5, request_id=f"r{i}", shadow_header=None)
               for i in range(5)]  # fmt: skip
    assert offered == [True, True, False, False, False]
    await asyncio.sleep(0.01)
    assert shadow.in_flight == 2
    assert counts(metrics)["dropped"] == 3.0
    sender.gate.set()
    await settle(shadow)
    assert counts(metrics) == {"agree": 2.0, "disagree": 0.0, "error": 0.0, "dropped": 3.0}
    # Room again once they are answered.
    assert shadow.offer(b"x", top1=5, request_id="r5", shadow_header=None)
    await settle(shadow)
    await shadow.close()


@pytest.mark.anyio
async def test_copies_and_unsampled_answers_are_not_sent() -> None:
    metrics, sender = Metrics(), FakeSender()
    looping = Shadow(policy(percent=100.0), sender, metrics)
    assert not looping.offer(b"x", top1=5, request_id="r", shadow_header="1")
    never = Shadow(policy(percent=0.0), sender, metrics)
    assert not any(never.offer(b"x", top1=5, request_id="r", shadow_header=None)
                   for _ in range(100))  # fmt: skip
    assert sender.sent == []
    assert counts(metrics) == {r.value: 0.0 for r in Result}
    some = Shadow(policy(percent=30.0, concurrency=1000), sender, metrics, rng=random.Random(1))
    sent = sum(some.offer(b"x", top1=5, request_id="r", shadow_header=None) for _ in range(300))
    await settle(some)
    assert 50 < sent < 130
    assert len(sender.sent) == sent
    await some.close()


@pytest.mark.anyio
async def test_close_abandons_the_calls_in_flight() -> None:
    metrics, sender = Metrics(), FakeSender()
    sender.gate = asyncio.Event()
    shadow = Shadow(policy(), sender, metrics)
    shadow.offer(b"x", top1=5, request_id="r", shadow_header=None)
    await asyncio.sleep(0.01)
    await shadow.close()
    assert shadow.in_flight == 0
    assert sender.closed
    assert counts(metrics) == {r.value: 0.0 for r in Result}  # abandoned, not counted
