"""The hash-locked requirement files in requirements/ (written by `uv pip compile
--generate-hashes` through scripts/lock.sh): read their entries, say where they disagree with
pyproject.toml's pins, and carry the CPU-index torch wheels into a lock that was resolved where
that index cannot be reached.

Standard library only: scripts/lock.sh runs it with whatever Python the venv has.

    python scripts/lockfile.py carry-over OLD NEW torch torchvision
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

# `name==version \` (uv writes the normalized name), then `    --hash=sha256:<hex>` lines, then
# `    # via ...` annotation lines.
REQUIREMENT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+?)(?: \\)?$")
HASH = re.compile(r"^\s+--hash=sha256:([0-9a-f]{64})(?: \\)?$")
# An exact pin in pyproject.toml: `name==version` or `name[extra,...]==version`.
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;,]+)$")


class LockError(ValueError):
    """A lock file, or pyproject.toml, is not what scripts/lock.sh writes or reads."""


@dataclass(frozen=True)
class Entry:
    name: str  # normalized (PEP 503)
    version: str
    hashes: tuple[str, ...]
    spec: tuple[str, ...]  # the requirement line and its --hash lines
    notes: tuple[str, ...]  # the `# via` lines after them

    @property
    def public_version(self) -> str:
        """The version without its local label: 2.11.0+cpu -> 2.11.0."""
        return self.version.split("+", 1)[0]


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse(text: str) -> tuple[list[str], list[Entry]]:
    """The header comment lines, and every entry in order."""
    header: list[str] = []
    entries: list[Entry] = []
    current: dict[str, list[str]] | None = None

    def close() -> None:
        if current is None:
            return
        match = REQUIREMENT.match(current["spec"][0])
        assert match is not None
        hashes = []
        for line in current["spec"][1:]:
            hashed = HASH.match(line)
            if hashed is None:
                raise LockError(f"not a hash line: {line!r}")
            hashes.append(hashed.group(1))
        entries.append(
            Entry(
                name=normalize(match.group(1)),
                version=match.group(2),
                hashes=tuple(hashes),
                spec=tuple(current["spec"]),
                notes=tuple(current["notes"]),
            )
        )

    for line in text.splitlines():
        if REQUIREMENT.match(line):
            close()
            current = {"spec": [line], "notes": []}
        elif current is None:
            if line and not line.startswith("#"):
                raise LockError(f"not a requirement or a comment: {line!r}")
            header.append(line)
        elif line.lstrip().startswith("--hash="):
            if current["notes"]:
                raise LockError(f"a hash after the annotations: {line!r}")
            current["spec"].append(line)
        elif line.lstrip().startswith("#"):
            current["notes"].append(line)
        elif line.strip():
            raise LockError(f"not a requirement, a hash or a comment: {line!r}")
    close()
    return header, entries


def read(path: Path) -> dict[str, Entry]:
    _, entries = parse(path.read_text())
    return {entry.name: entry for entry in entries}


def project_pins(pyproject: Path) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """The exact pins of [project].dependencies, and of each optional-dependencies extra."""
    project = tomllib.loads(pyproject.read_text())["project"]

    def pins(requirements: list[str], where: str) -> dict[str, str]:
        result = {}
        for requirement in requirements:
            match = PIN.match(requirement.replace(" ", ""))
            if match is None:
                raise LockError(f"{where}: {requirement!r} is not an exact `==` pin")
            result[normalize(match.group(1))] = match.group(2)
        return result

    extras = {
        name: pins(requirements, f"extra {name}")
        for name, requirements in project.get("optional-dependencies", {}).items()
    }
    return pins(project["dependencies"], "dependencies"), extras


def disagreements(lock: dict[str, Entry], pins: dict[str, str]) -> list[str]:
    """Each pin the lock lacks or holds at another version (a local label such as +cpu is the
    same version: `torch==2.11.0` installs 2.11.0+cpu), and each entry without a hash."""
    problems = []
    for name, version in sorted(pins.items()):
        entry = lock.get(name)
        if entry is None:
            problems.append(f"{name}=={version} is not in the lock")
        elif entry.public_version != version:
            problems.append(f"{name}: pyproject.toml pins {version}, the lock {entry.version}")
    problems += [f"{entry.name} has no hash" for entry in lock.values() if not entry.hashes]
    return problems


def carry_over(old_text: str, new_text: str, names: list[str]) -> str:
    """new_text with the requirement and hash lines of each named package taken from old_text,
    whose version may only differ from new_text's by its local label (the CPU index's +cpu
    wheels, carried into a lock resolved against PyPI). The annotations stay new_text's."""
    _, old_entries = parse(old_text)
    old = {entry.name: entry for entry in old_entries}
    header, entries = parse(new_text)
    wanted = {normalize(name) for name in names}
    missing = wanted - {entry.name for entry in entries}
    if missing:
        raise LockError(f"the new lock has no {', '.join(sorted(missing))}")
    lines = list(header)
    for entry in entries:
        if entry.name in wanted:
            before = old.get(entry.name)
            if before is None:
                raise LockError(f"the previous lock has no {entry.name} to carry over")
            if before.public_version != entry.public_version:
                raise LockError(
                    f"{entry.name} {entry.version} is resolved, the previous lock holds "
                    f"{before.version}: the new version's wheels and hashes come from its index"
                )
            lines += before.spec
        else:
            lines += entry.spec
        lines += entry.notes
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    carry = commands.add_parser("carry-over", help=carry_over.__doc__)
    carry.add_argument("old", type=Path, help="the lock whose entries are kept")
    carry.add_argument("new", type=Path, help="the freshly resolved lock, rewritten in place")
    carry.add_argument("names", nargs="+", help="the packages whose entries are carried over")
    args = parser.parse_args(argv)
    try:
        text = carry_over(args.old.read_text(), args.new.read_text(), args.names)
    except (LockError, OSError) as error:
        print(f"lockfile: {error}", file=sys.stderr)
        return 1
    args.new.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
