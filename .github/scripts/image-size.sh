#!/usr/bin/env bash
# Reports an image's size, uncompressed (`docker image inspect`'s .Size: what it takes unpacked
# on a node) and compressed (the `docker save | zstd` archive the build job saves: about what a
# node downloads), on stdout and in the job summary; with MAX_BYTES, fails when the uncompressed
# size is over it.
# Usage: image-size.sh IMAGE ARCHIVE [MAX_BYTES]
set -euo pipefail

if [ "$#" -lt 2 ] || [ "$#" -gt 3 ]; then
  echo "usage: image-size.sh IMAGE ARCHIVE [MAX_BYTES]" >&2
  exit 2
fi
image=$1
archive=$2
max=${3:-}
if [ -n "$max" ] && ! [[ "$max" =~ ^[0-9]+$ ]]; then
  echo "image-size.sh: MAX_BYTES must be a number of bytes, not '$max'" >&2
  exit 2
fi
summary=${GITHUB_STEP_SUMMARY:-/dev/null}

size=$(docker image inspect --format '{{.Size}}' "$image")
[[ "$size" =~ ^[0-9]+$ ]] || { echo "image-size.sh: no size for $image: '$size'" >&2; exit 2; }
compressed=$(wc -c < "$archive" | tr -d ' ')
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }

echo "$image: uncompressed $size bytes ($(mib "$size")), compressed $compressed bytes ($(mib "$compressed"), $(basename "$archive"))"
{
  echo "| $image | bytes | |"
  echo "| --- | ---: | ---: |"
  echo "| uncompressed (\`docker image inspect\`) | $size | $(mib "$size") |"
  echo "| compressed (\`docker save \\| zstd\`) | $compressed | $(mib "$compressed") |"
  if [ -n "$max" ]; then echo "| limit (uncompressed) | $max | $(mib "$max") |"; fi
  echo
} >> "$summary"

if [ -n "$max" ] && [ "$size" -gt "$max" ]; then
  echo "::error title=Image size::$image is $size bytes ($(mib "$size")) uncompressed, over the limit of $max bytes ($(mib "$max"))"
  exit 1
fi
