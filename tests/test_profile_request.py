"""bench/experiments/profile_request.py's arithmetic and bench/experiments/flamegraph.py's
drawing (the profiling run itself needs a model server and minutes: its figures are in
docs/PERFORMANCE.md)."""

from __future__ import annotations

import pytest

from bench.experiments.flamegraph import build_tree, parse_collapsed, render_svg
from bench.experiments.profile_request import profile_summary, split, thread_role

RAW = [
    "thread (1): MainThread;Runner.run (asyncio/runners.py:118) 90",
    "thread (1): MainThread;Runner.run (asyncio/runners.py:118);send (uvicorn/h.py:5) 10",
    "thread (2): model_0;_worker (concurrent/futures/thread.py:81) 20",
    "thread (2): model_0;_worker (concurrent/futures/thread.py:83);infer (app/model/runtime.py:1);"
    "InferRequest.infer (openvino/_ov_api.py:202) 80",
    "not a stack line",
]


def test_collapsed_stacks_build_a_tree_of_sample_counts() -> None:
    stacks = parse_collapsed(RAW)
    assert len(stacks) == 4
    root = build_tree(stacks)
    assert root.samples == 200
    main = root.children["thread (1): MainThread"]
    assert main.samples == 100
    assert (
        main.children["Runner.run (asyncio/runners.py:118)"]
        .children["send (uvicorn/h.py:5)"]
        .samples
        == 10
    )


def test_flame_graph_leaves_out_boxes_too_narrow_to_see_and_escapes_names() -> None:
    stacks = [(["<main>", "wide & busy"], 999), (["<main>", "tiny"], 1)]
    svg = render_svg(build_tree(stacks), "t", min_fraction=0.01)
    assert "&lt;main&gt; (1000 samples, 100.00%)" in svg
    assert "wide &amp; busy (999 samples" in svg
    assert "tiny" not in svg


def test_a_response_splits_into_stages_that_add_up() -> None:
    row = split(50.0, {"decode": 4.0, "queue": 1.0, "inference": 40.0, "total": 47.0})
    assert row["server_other"] == pytest.approx(2.0)
    assert row["outside"] == pytest.approx(3.0)
    assert row["overhead"] == pytest.approx(row["server_other"] + row["outside"])


@pytest.mark.parametrize(
    ("thread", "role"),
    [
        ("thread (1): MainThread", "event loop"),
        ("thread (7): decode_1", "decode"),
        ("thread (8): model_0", "model"),
        ("thread (9): AnyIO worker thread", "anyio worker"),
    ],
)
def test_threads_are_grouped_by_role(thread: str, role: str) -> None:
    assert thread_role(thread) == role


def test_waiting_samples_are_not_counted_as_work() -> None:
    summary = profile_summary(parse_collapsed(RAW), requests=10)
    # 100 Hz: a sample is 10 ms, over 10 requests 1 ms per request.
    assert summary["event loop"]["working_ms_per_request"] == pytest.approx(10.0)
    assert summary["model"]["working_ms_per_request"] == pytest.approx(80.0)
    assert summary["model"]["model_forward_ms_per_request"] == pytest.approx(80.0)
    assert summary["event loop"]["top_working_frames"] == {"send (uvicorn/h.py:5)": 10.0}
