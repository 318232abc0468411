"""CPU accounting: cgroup quotas cap the thread pool; one CPU is left for HTTP and decoding."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from app.model.cpu import available_cpus, default_torch_threads, lower_thread_priority


def affinity() -> int:
    return len(os.sched_getaffinity(0))


def test_cgroup_v2_quota_caps_the_count(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs
    assert available_cpus(tmp_path) == min(affinity(), 2)


def test_cgroup_v2_without_limit_uses_affinity(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert available_cpus(tmp_path) == affinity()


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert available_cpus(tmp_path) == 1


def test_no_cgroup_files(tmp_path: Path) -> None:
    assert available_cpus(tmp_path) == affinity()


@pytest.mark.parametrize("cpus", [1, 2, 16])
def test_torch_gets_every_cpu(cpus: int) -> None:
    assert default_torch_threads(cpus) == cpus


def test_model_thread_priority_is_lowered_for_it_and_its_children() -> None:
    seen: dict[str, int] = {}

    def model_thread() -> None:
        assert lower_thread_priority(5)
        seen["self"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

        def child() -> None:  # like torch's OpenMP workers, created afterwards
            seen["child"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

        worker = threading.Thread(target=child)
        worker.start()
        worker.join()

    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    thread = threading.Thread(target=model_thread)
    thread.start()
    thread.join()
    assert seen == {"self": min(19, base + 5), "child": min(19, base + 5)}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base  # caller untouched


def test_on_a_gpu_torch_gets_one_cpu_thread() -> None:
    assert default_torch_threads(16, device_type="cuda") == 1
