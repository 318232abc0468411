"""TorchServe 0.12 as a benchmark peer: weights, archive, config, process.

Installed apart from the project by bench/torchserve/setup.sh (into .tools/torchserve-venv);
when it is missing, `missing_reason()` says so and the sweep skips the peer.

Everything runs on loopback with free ports, and with a private temporary folder (TorchServe
keeps its PID file and the workers' Unix sockets there, and its launcher refuses to start while
another TorchServe's PID file exists), so it cannot collide with another TorchServe on the
machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import torch
from torchvision import models

from harness.process import ROOT, ManagedProcess, free_port, group_stat

VENV = ROOT / ".tools" / "torchserve-venv"
HERE = Path(__file__).resolve().parent
HANDLER = HERE / "handler.py"
MODEL = "resnet50"  # the handler's architecture and preprocessing are ResNet-50's


@dataclass(frozen=True)
class TorchServeSettings:
    """How the frontend runs the model: workers x OMP threads each, TorchServe's batching."""

    workers: int
    threads_per_worker: int = 1
    batch_size: int = 1
    max_batch_delay_ms: int = 0


def missing_reason(venv: Path = VENV) -> str | None:
    """Why TorchServe cannot run here, or None when it can."""
    for tool in ("torchserve", "torch-model-archiver"):
        if not (venv / "bin" / tool).is_file():
            return f"{venv / 'bin' / tool} not found (bench/torchserve/setup.sh installs it)"
    java_home = os.environ.get("JAVA_HOME")
    java = Path(java_home, "bin", "java") if java_home else None
    if java is not None and not java.is_file():
        return f"JAVA_HOME={java_home} has no bin/java"
    if java is None and subprocess.run(["which", "java"], capture_output=True).returncode:
        return "java not found (bench/torchserve/setup.sh installs openjdk-17-jre-headless)"
    return None


def installed_version(venv: Path = VENV) -> str | None:
    """TorchServe's version as installed in its venv (recorded with the results), or None."""
    found = sorted((venv / "lib").glob("python*/site-packages/ts/version.txt"))
    return found[0].read_text().strip() if found else None


def render_config(
    settings: TorchServeSettings,
    *,
    ports: dict[str, int],
    model_store: Path,
) -> str:
    """config.properties: every listener on 127.0.0.1, the model loaded at start with its
    workers and batching, no system metrics (a collector process every minute), no snapshots."""
    model = {
        MODEL: {
            "1.0": {
                "defaultVersion": True,
                "marName": f"{MODEL}.mar",
                "minWorkers": settings.workers,
                "maxWorkers": settings.workers,
                "batchSize": settings.batch_size,
                "maxBatchDelay": settings.max_batch_delay_ms,
                "responseTimeout": 120,
            }
        }
    }
    lines = [
        f"inference_address=http://127.0.0.1:{ports['inference']}",
        f"management_address=http://127.0.0.1:{ports['management']}",
        f"metrics_address=http://127.0.0.1:{ports['metrics']}",
        "grpc_inference_address=127.0.0.1",
        f"grpc_inference_port={ports['grpc_inference']}",
        "grpc_management_address=127.0.0.1",
        f"grpc_management_port={ports['grpc_management']}",
        f"model_store={model_store}",
        f"load_models={MODEL}.mar",
        f"models={json.dumps(model, separators=(',', ':'))}",
        f"default_workers_per_model={settings.workers}",
        "disable_system_metrics=true",
        "disable_token_authorization=true",
        # The load generator's 64 clients must queue, not be refused (the default is 100).
        "job_queue_size=256",
    ]
    return "\n".join(lines) + "\n"


def worker_env(settings: TorchServeSettings, tmp: Path) -> dict[str, str]:
    """TorchServe sets OMP_NUM_THREADS only for torchrun models: the workers inherit ours."""
    return {
        "OMP_NUM_THREADS": str(settings.threads_per_worker),
        "TEMP": str(tmp),  # the frontend's java.io.tmpdir: worker sockets
        "TMPDIR": str(tmp),  # the launcher's PID file
        "LOG_LOCATION": str(tmp / "logs"),
        "METRICS_LOCATION": str(tmp / "logs"),
    }


def save_weights(path: Path, seed: int = 0) -> None:
    """Random ResNet-50 weights drawn as the baseline server draws them (same FLOPs as the real
    ones; no machine here can download those)."""
    torch.manual_seed(seed)
    torch.save(models.resnet50(weights=None).state_dict(), path)


def build_archive(work: Path, store: Path, venv: Path = VENV) -> Path:
    """resnet50.mar from the handler and a weights file, with TorchServe's own archiver."""
    weights = work / f"{MODEL}-random.pt"
    save_weights(weights)
    store.mkdir(parents=True, exist_ok=True)
    command = [str(venv / "bin" / "torch-model-archiver"),
               "--model-name", MODEL, "--version", "1.0",
               "--serialized-file", str(weights), "--handler", str(HANDLER),
               "--export-path", str(store), "--force"]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)
    weights.unlink()
    return store / f"{MODEL}.mar"


class TorchServeProcess:
    """The launcher, its Java frontend and the Python workers, one process group."""

    predict_path = f"/predictions/{MODEL}"

    def __init__(
        self, settings: TorchServeSettings, work: Path, log_path: Path, venv: Path = VENV
    ) -> None:
        self.settings = settings
        self.ports = {
            name: free_port()
            for name in ("inference", "management", "metrics", "grpc_inference", "grpc_management")
        }
        self.tmp = work / "tmp"
        (self.tmp / "logs").mkdir(parents=True, exist_ok=True)
        store = work / "model-store"
        build_archive(work, store, venv)
        config = work / "config.properties"
        config.write_text(render_config(settings, ports=self.ports, model_store=store))
        command = [str(venv / "bin" / "torchserve"), "--foreground", "--ncs",
                   "--disable-token-auth", "--ts-config", str(config),
                   "--model-store", str(store)]  # fmt: skip
        self.process = ManagedProcess(
            command, env=worker_env(settings, self.tmp), log_path=log_path,
            port=self.ports["inference"],
        )  # fmt: skip
        self.base_url = self.process.base_url

    @property
    def pid(self) -> int:
        """The launcher's, which is also the group's."""
        return self.process.pid

    def start(self) -> TorchServeProcess:
        self.process.start()
        return self

    def group_pids(self) -> list[int]:
        """Live processes of the group (zombies left for init to reap do not count)."""
        return [pid for pid, f in group_stat(self.process.pid).items() if f[0] != "Z"]

    def worker_pids(self) -> list[int]:
        out = []
        for pid in self.group_pids():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"model_service_worker" in cmdline:
                out.append(pid)
        return out

    def wait_ready(self, timeout_s: float = 300.0) -> None:
        """Until the management API shows every worker READY (the inference API answers /ping
        before the workers exist), then check the workers' thread setting took."""
        proc = self.process.proc
        assert proc is not None
        url = f"http://127.0.0.1:{self.ports['management']}/models/{MODEL}"
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise RuntimeError(f"torchserve exited:\n{self.process.log_text()[-5000:]}")
                try:
                    response = client.get(url)
                    workers = response.json()[0]["workers"] if response.status_code == 200 else []
                except (httpx.TransportError, ValueError, KeyError, IndexError):
                    workers = []
                ready = [w for w in workers if w.get("status") == "READY"]
                if len(ready) == self.settings.workers:
                    self._check_threads()
                    return
                time.sleep(0.2)
        raise RuntimeError(f"torchserve not ready after {timeout_s}s:\n{self.process.log_text()}")

    def _check_threads(self) -> None:
        want = f"OMP_NUM_THREADS={self.settings.threads_per_worker}".encode()
        pids = self.worker_pids()
        if len(pids) != self.settings.workers:
            raise RuntimeError(f"expected {self.settings.workers} workers, found {pids}")
        for pid in pids:
            if want not in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                raise RuntimeError(f"worker {pid} does not run with {want.decode()}")

    def rss_bytes(self) -> int:
        """The whole group: launcher, JVM and workers."""
        total = 0
        for pid in self.group_pids():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        return total

    def terminate(self, timeout_s: float = 30.0) -> None:
        """The launcher does not forward signals to Java: stop the whole group."""
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout_s
        assert self.process.proc is not None
        while time.monotonic() < deadline:
            self.process.proc.poll()  # reap the launcher, our own child
            if not self.group_pids():
                break
            time.sleep(0.2)
        if self.group_pids():
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.proc.wait(10)
