"""The Dockerfile parsed into stages and instructions, for the container tests (fixtures live in
conftest.py). Enough of the grammar for the checks, and loud about what it does not read: a
heredoc, a legacy `ENV KEY value`, a FROM it cannot split, or an instruction before the first
FROM other than ARG fail the parse instead of being misread."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"

# `RUN <<EOF`, `COPY <<-"EOF" /x`: BuildKit heredocs, whose bodies this parser would take for
# instructions.
_HEREDOC = re.compile(r"<<-?\s*[\"']?[A-Za-z_][A-Za-z0-9_]*[\"']?(\s|$)")
# KEY=value pairs of ENV, ARG and LABEL: a value may be double-quoted or empty (`ENV X=`).
_PAIR = re.compile(r'([A-Za-z_][A-Za-z0-9_.-]*)=("[^"]*"|\S*)')


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    args: str  # everything after the keyword, continuation lines joined
    line: int

    def flags(self) -> list[str]:
        """The leading --flags (`--mount=...`, `--from=...`, `--platform=...`, `--interval=...`)."""
        found = []
        for word in self.args.split():
            if not word.startswith("--"):
                break
            found.append(word)
        return found

    def flag_values(self, name: str) -> list[str]:
        """The values of every leading --NAME=VALUE flag, in order."""
        prefix = f"--{name}="
        return [f[len(prefix) :] for f in self.flags() if f.startswith(prefix)]

    def body(self) -> str:
        """The arguments after the leading --flags: a RUN's command, a COPY's paths."""
        return re.sub(r"^(--\S+\s+)*", "", self.args)

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form instruction (after any --flags), else None."""
        text = self.args
        if self.keyword == "HEALTHCHECK":
            text = text[text.index("CMD") + 3 :] if "CMD" in text else ""
        else:
            text = self.body()
        text = text.strip()
        if not text.startswith("["):
            return None
        value = json.loads(text)
        assert isinstance(value, list)
        return [str(v) for v in value]


def pairs(text: str) -> dict[str, str]:
    """KEY=value pairs, quotes removed (a value may hold ${VAR} references, or be empty)."""
    return {key: value.strip('"') for key, value in _PAIR.findall(text)}


@dataclass
class Stage:
    base: str
    name: str | None
    platform: str | None = None  # FROM --platform=...
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        """ENV key=value pairs set by this stage itself (see Dockerfile.env for the inherited)."""
        values: dict[str, str] = {}
        for inst in self.all("ENV"):
            values.update(pairs(inst.args))
        return values

    def args(self) -> dict[str, str | None]:
        """ARG names declared in this stage, with their defaults (None: no default)."""
        declared: dict[str, str | None] = {}
        for inst in self.all("ARG"):
            key, equals, default = inst.args.partition("=")
            declared[key.strip()] = default.strip().strip('"') if equals else None
        return declared


@dataclass
class Dockerfile:
    text: str
    global_args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        found = [s for s in self.stages if s.name == name]
        assert len(found) == 1, f"expected one stage named {name!r}"
        return found[0]

    @property
    def default_target(self) -> Stage:
        """What `docker build .` without --target builds: the last stage."""
        return self.stages[-1]

    def chain(self, name: str) -> list[Stage]:
        """The stage and the stages it is built FROM, the first one (an image's) first."""
        stages = [self.stage(name)]
        names = {s.name for s in self.stages}
        while stages[0].base in names:
            stages.insert(0, self.stage(stages[0].base))
        return stages

    def env(self, name: str) -> dict[str, str]:
        """The ENV a stage ends with: its own over what it inherits from earlier stages."""
        values: dict[str, str] = {}
        for stage in self.chain(name):
            values.update(stage.env())
        return values

    def all(self, name: str, keyword: str) -> list[Instruction]:
        """Instructions of a stage and of the stages it is built FROM."""
        return [i for stage in self.chain(name) for i in stage.all(keyword)]


def parse_dockerfile(text: str) -> Dockerfile:
    """Comments, continuations, stages; `# hadolint ignore=...` and other comments are skipped
    wherever they stand (before a FROM, inside a continued RUN)."""
    instructions: list[Instruction] = []
    buffer: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if buffer and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if not buffer:
            start = number
            assert not _HEREDOC.search(stripped), f"line {number}: a heredoc (not parsed here)"
        if stripped.endswith("\\"):
            buffer.append(stripped[:-1].strip())
            continue
        buffer.append(stripped)
        joined = " ".join(part for part in buffer if part)
        keyword, _, rest = joined.partition(" ")
        instructions.append(Instruction(keyword.upper(), rest.strip(), start))
        buffer = []
    assert not buffer, "the Dockerfile ends inside a continued instruction"

    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for inst in instructions:
        if inst.keyword == "FROM":
            parts = inst.body().split()
            assert len(parts) in (1, 3), f"line {inst.line}: FROM {inst.args}"
            name = None
            if len(parts) == 3:
                assert parts[1].upper() == "AS", f"line {inst.line}: FROM {inst.args}"
                name = parts[2]
            platforms = inst.flag_values("platform")
            assert set(inst.flags()) == {f"--platform={p}" for p in platforms}, inst.args
            platform = platforms[-1] if platforms else None
            stages.append(Stage(base=parts[0], name=name, platform=platform))
        elif not stages:
            assert inst.keyword == "ARG", f"line {inst.line}: only ARG may precede FROM"
            key, _, default = inst.args.partition("=")
            global_args[key.strip()] = default.strip()
        else:
            if inst.keyword == "ENV":
                first = inst.args.split()[0] if inst.args.split() else ""
                assert "=" in first, f"line {inst.line}: ENV KEY=value, not the legacy form"
            stages[-1].instructions.append(inst)
    return Dockerfile(text=text, global_args=global_args, stages=stages)
