#!/usr/bin/env bash
# Writes the hash-locked requirement files from pyproject.toml, with the uv that pyproject.toml's
# dev extra pins (scripts/install.sh puts it in .venv). One command after any change to
# pyproject.toml's dependencies; requirements/README.md says which file installs where.
#
#   requirements/dev-pypi.txt     every dependency and extra, and the build backend; PyPI's torch
#   requirements/dev-cpu.txt      as dev-pypi.txt, torch and torchvision from the CPU-only index
#   requirements/runtime-cpu.txt  [project].dependencies only, no torch: the image's cpu target
#   requirements/runtime-gpu.txt  those and the torch extra, PyPI's (CUDA) torch: the gpu target
#   requirements/build-pypi.txt   those and the torch and int8 extras, PyPI's torch: the image's
#                                 converter stage with TORCH_INDEX_URL empty
#   requirements/build-cpu.txt    as build-pypi.txt, torch and torchvision from the CPU-only
#                                 index: the converter stage by default
#   requirements/pip.txt          the pip that installs the others (the dev extra's pin), alone:
#                                 install.sh and the Dockerfile put it in first
#
# For CPython 3.11 on x86_64 Linux (manylinux_2_28); every file of each pinned version is hashed.
# dev-pypi.txt is resolved first and keeps the versions it holds (uv prefers the pins of the
# file it rewrites; pass `--upgrade-package NAME` or `--upgrade` to move them); the others are
# constrained to its versions, so that the images run what the tests ran.
#
# Usage: scripts/lock.sh [--check] [--cpu-from=auto|index|recorded] [uv pip compile options]
#   --check        regenerate in a temporary copy and diff with requirements/: exit 1 when they
#                  differ (LOCK_CHECK_OUT=DIR keeps the regenerated files there)
#   --cpu-from=index     torch and torchvision from https://download.pytorch.org/whl/cpu
#                        (uv --torch-backend cpu); fails where that index does not answer
#   --cpu-from=recorded  where it does not (these machines): the CPU locks are resolved against
#                        PyPI with the CPU wheel's dependencies (requirements/torch-cpu.toml),
#                        and torch's and torchvision's +cpu hashes are carried over from the
#                        committed CPU lock itself (scripts/lockfile.py), or, for a CPU lock
#                        not committed yet, from requirements/dev-cpu.txt; a new torch version
#                        cannot be locked this way
#   --cpu-from=auto      (default) index when it answers, recorded otherwise, and says which
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
UV=${UV:-$ROOT/.venv/bin/uv}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
CPU_INDEX=https://download.pytorch.org/whl/cpu
LOCKS=(dev-pypi dev-cpu runtime-cpu runtime-gpu build-pypi build-cpu pip)

die() { echo "lock.sh: $*" >&2; exit 1; }
note() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

check=0
cpu_from=auto
uv_args=()
for arg in "$@"; do
  case $arg in
    --check) check=1 ;;
    --cpu-from=*) cpu_from=${arg#--cpu-from=} ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) uv_args+=("$arg") ;;
  esac
done
case $cpu_from in auto | index | recorded) ;; *) die "--cpu-from=$cpu_from: auto, index or recorded" ;; esac

[ -x "$UV" ] || die "no $UV: run scripts/install.sh first"
[ -x "$PYTHON" ] || die "no $PYTHON: run scripts/install.sh first"
pinned=$(sed -n 's/^ *"uv==\([^"]*\)",.*$/\1/p' pyproject.toml)
running=$("$UV" --version | awk '{print $2}')
if [ "$running" != "$pinned" ]; then
  # Bumping uv: the old one writes the locks that install the new one, which then rewrites them.
  [ "$check" = 0 ] || die "uv $running runs, pyproject.toml pins uv $pinned: run scripts/install.sh"
  note "uv $running runs, pyproject.toml pins $pinned: run scripts/install.sh, then this again"
fi

if [ "$cpu_from" = auto ]; then
  if "$PYTHON" - "$CPU_INDEX/torch/" <<'EOF'; then
import sys
import urllib.request

try:
    urllib.request.urlopen(urllib.request.Request(sys.argv[1], method="HEAD"), timeout=15)
except OSError:
    sys.exit(1)
EOF
    cpu_from=index
  else
    cpu_from=recorded
  fi
fi
if [ "$cpu_from" = index ]; then
  note "CPU locks: torch and torchvision from $CPU_INDEX"
else
  note "CPU locks: $CPU_INDEX not used; torch's and torchvision's +cpu hashes are the committed ones"
fi

# --check works in a copy with the same relative paths, so that the output (its header, the
# `-c requirements/dev-pypi.txt` annotations) is byte for byte what a rewrite here would be.
if [ "$check" = 1 ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  mkdir "$work/requirements"
  cp pyproject.toml "$work/"
  cp requirements/*.txt requirements/torch-cpu.toml "$work/requirements/"
  cd "$work"
fi

compile() {  # compile OUTPUT [uv pip compile arguments]
  local out=$1
  shift
  "$UV" pip compile --quiet --generate-hashes --python-version 3.11 \
    --python-platform x86_64-manylinux_2_28 --custom-compile-command scripts/lock.sh \
    --output-file "$out" "$@"
}
# The build backend too, so that install.sh installs the project without fetching it unhashed.
build_requires() {
  "$PYTHON" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))'
}
# The lock whose torch and torchvision +cpu entries --cpu-from=recorded carries over: the CPU
# lock's own committed version, or, for a new CPU lock, this one (rewritten before the others).
CPU_SOURCE=requirements/dev-cpu.txt
cpu_lock() {  # cpu_lock NAME [uv pip compile arguments]
  local out=requirements/$1.txt source previous
  shift
  if [ "$cpu_from" = index ]; then
    compile "$out" --no-config --torch-backend cpu "$@"
    return
  fi
  source=$out
  if [ ! -f "$source" ]; then
    if [ "$out" = "$CPU_SOURCE" ] || [ ! -f "$CPU_SOURCE" ]; then
      die "$out is missing: its +cpu hashes need $CPU_INDEX (--cpu-from=index)"
    fi
    source=$CPU_SOURCE
    note "$out is new: torch's and torchvision's +cpu entries from $source"
  fi
  previous=$(mktemp)
  cp "$source" "$previous"
  compile "$out" --config-file requirements/torch-cpu.toml "$@"
  "$PYTHON" "$ROOT/scripts/lockfile.py" carry-over "$previous" "$out" torch torchvision
  rm -f "$previous"
}

note "requirements/dev-pypi.txt"
build_requires | compile requirements/dev-pypi.txt --no-config pyproject.toml - --all-extras \
  ${uv_args[@]+"${uv_args[@]}"}
note "requirements/pip.txt"
pip_pin=$(sed -n 's/^ *"pip==\([^"]*\)",.*$/\1/p' pyproject.toml)
[ -n "$pip_pin" ] || die "pyproject.toml's dev extra pins no pip"
echo "pip==$pip_pin" | compile requirements/pip.txt --no-config -
note "requirements/dev-cpu.txt"
build_requires | cpu_lock dev-cpu pyproject.toml - --all-extras -c requirements/dev-pypi.txt
# No torch in it, so no torch index either: the same file whatever --cpu-from says.
note "requirements/runtime-cpu.txt"
compile requirements/runtime-cpu.txt --no-config pyproject.toml -c requirements/dev-pypi.txt
note "requirements/runtime-gpu.txt"
compile requirements/runtime-gpu.txt --no-config pyproject.toml --extra torch \
  -c requirements/dev-pypi.txt
note "requirements/build-pypi.txt"
compile requirements/build-pypi.txt --no-config pyproject.toml --extra torch --extra int8 \
  -c requirements/dev-pypi.txt
note "requirements/build-cpu.txt"
cpu_lock build-cpu pyproject.toml --extra torch --extra int8 -c requirements/dev-pypi.txt

if [ "$check" = 0 ]; then
  note "done: requirements/{$(IFS=,; echo "${LOCKS[*]}")}.txt"
  exit 0
fi
if [ -n "${LOCK_CHECK_OUT:-}" ]; then
  mkdir -p "$LOCK_CHECK_OUT"
  cp requirements/*.txt "$LOCK_CHECK_OUT/"
fi
status=0
for lock in "${LOCKS[@]}"; do
  if ! diff -u --label "requirements/$lock.txt (committed)" --label "requirements/$lock.txt (from pyproject.toml)" \
    "$ROOT/requirements/$lock.txt" "requirements/$lock.txt"; then
    status=1
  fi
done
if [ "$status" = 1 ]; then
  die "the locks are not what pyproject.toml gives: run scripts/lock.sh and commit requirements/"
fi
note "the locks are in step with pyproject.toml"
