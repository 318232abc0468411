"""The benchmarks' handle on the shared process harness (harness/process.py, which the tests
use too): every bench module imports these names from here."""

from harness.process import ROOT, ManagedProcess, app_command, app_process, free_port

__all__ = ["ROOT", "ManagedProcess", "app_command", "app_process", "free_port"]
