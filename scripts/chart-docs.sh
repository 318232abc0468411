#!/usr/bin/env bash
# Generates the chart's README.md with the pinned helm-docs (scripts/install.sh builds it into
# .tools/bin) from the chart's README.md.gotmpl and the `# --` comments of its values.yaml.
#
#   scripts/chart-docs.sh                     rewrite charts/resnet-serving/README.md
#   scripts/chart-docs.sh --check             exit 1 with a diff when README.md is stale
#   scripts/chart-docs.sh [--check] CHART_DIR  another chart directory (the tests use a copy)
#
# HELM_DOCS overrides the binary (default .tools/bin/helm-docs of this checkout).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
check=0
if [ "${1:-}" = "--check" ]; then
  check=1
  shift
fi
chart=${1:-$root/charts/resnet-serving}
helm_docs=${HELM_DOCS:-$root/.tools/bin/helm-docs}

if [ ! -x "$helm_docs" ]; then
  echo "chart-docs: $helm_docs is missing: run scripts/install.sh" >&2
  exit 2
fi
if [ ! -f "$chart/Chart.yaml" ] || [ ! -f "$chart/README.md.gotmpl" ]; then
  echo "chart-docs: $chart has no Chart.yaml or README.md.gotmpl" >&2
  exit 2
fi
chart=$(cd "$chart" && pwd)

generated=$(mktemp)
trap 'rm -f "$generated"' EXIT
# --dry-run prints the README instead of writing it, so both modes see the same bytes.
# --chart-to-generate keeps helm-docs away from subcharts unpacked under charts/. File order
# keeps the table grouped the way values.yaml is.
"$helm_docs" --dry-run --log-level warning \
  --chart-search-root "$chart" --chart-to-generate "$chart" \
  --template-files README.md.gotmpl --sort-values-order file >"$generated"
# helm-docs only warns and prints nothing when it cannot parse the chart (e.g. a broken
# values.yaml): never let that pass as an empty README.
if ! grep -q '^| Key | Type | Default | Description |$' "$generated"; then
  echo "chart-docs: helm-docs produced no values table for $chart (see its warnings above)" >&2
  exit 1
fi

readme=$chart/README.md
if [ "$check" = 1 ]; then
  if ! diff -u --label "$readme (committed)" --label "$readme (helm-docs)" \
    "$readme" "$generated" 2>/dev/null; then
    [ -f "$readme" ] || echo "chart-docs: $readme does not exist" >&2
    echo "chart-docs: $readme is stale: run scripts/chart-docs.sh and commit the result" >&2
    exit 1
  fi
  echo "chart-docs: $readme is current"
else
  cp "$generated" "$readme"
  echo "chart-docs: wrote $readme"
fi
