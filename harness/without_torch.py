"""`python -m harness.without_torch MODULE [ARG...]`: runs MODULE as `python -m MODULE` would, in
a process where torch and torchvision cannot be imported, as if they were not installed.

The CPU image has neither; the development venv has both. This reproduces the image's situation
on the development machine, so that a test (or a benchmark of idle memory) sees the path that
must not touch torch fail loudly if it does."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import runpy
import sys
from collections.abc import Sequence

BLOCKED = frozenset({"torch", "torchvision"})


class _Blocked(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit("usage: python -m harness.without_torch MODULE [ARG...]")
    sys.meta_path.insert(0, _Blocked())
    module, sys.argv = sys.argv[1], sys.argv[1:]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
