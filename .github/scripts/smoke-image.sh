#!/usr/bin/env bash
# Runs a built image the way the Helm chart does and checks what the Dockerfile promises, for
# either target of it:
#   - starts with a read-only root filesystem, /tmp as tmpfs, no capabilities, no new privileges;
#   - runs as UID/GID 10001 (the chart's runAsUser/runAsGroup);
#   - cpu: SERVING_MODEL_DIR names the OpenVINO IR baked in (its manifest.json is there) and
#     there is no torch; gpu: SERVING_MODEL_DIR is empty and torch is there (this runner has no
#     GPU: the GPU image must still serve, on the CPU);
#   - its HEALTHCHECK turns "healthy" (interval shortened here, command unchanged);
#   - /ready turns 200 with the baked model (no download: the container has no network);
#   - /predict on a real photograph ranks the expected ImageNet class in its top TOP (default 1);
#   - SIGTERM (docker stop) ends it gracefully: exit status 0, well before the kill timeout.
# Its size is image-size.sh's job (the build job runs it on the saved image).
# Usage: smoke-image.sh cpu|gpu IMAGE PHOTO EXPECTED_LABEL [TOP]
set -euo pipefail

usage() {
  echo "usage: smoke-image.sh cpu|gpu IMAGE PHOTO EXPECTED_LABEL [TOP]" >&2
  exit 2
}
if [ "$#" -lt 4 ] || [ "$#" -gt 5 ]; then usage; fi
target=$1
image=$2
photo=$3
expected=$4
top=${5:-1}
case "$target" in cpu | gpu) ;; *) usage ;; esac
[[ "$top" =~ ^[1-9][0-9]*$ ]] || usage
name=resnet-serving-smoke-$target
port=18000
here=$(cd "$(dirname "$0")" && pwd)
summary=${GITHUB_STEP_SUMMARY:-/dev/null}

response=$(mktemp)
cleanup() {
  docker rm -f "$name" >/dev/null 2>&1 || true
  rm -f "$response"
}
trap cleanup EXIT
fail() {
  echo "::error title=Image smoke test ($target)::$*"
  docker logs "$name" 2>&1 | tail -n 50 || true
  exit 1
}

# What the image itself sets (its ENV), before anything runs.
model_dir=$(docker image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$image" \
  | sed -n 's/^SERVING_MODEL_DIR=//p')
if [ "$target" = cpu ]; then
  [ -n "$model_dir" ] || fail "the CPU image sets no SERVING_MODEL_DIR (its baked OpenVINO IR)"
else
  [ -z "$model_dir" ] || fail "the GPU image sets SERVING_MODEL_DIR=$model_dir; it has no IR"
fi

# --network none: the model must be in the image, nothing may be downloaded at start-up.
# The port is then reached through docker exec, inside the container's own network namespace.
docker run -d --name "$name" \
  --network none \
  --read-only --tmpfs /tmp:rw,size=256m \
  --cap-drop ALL --security-opt no-new-privileges \
  --health-interval 2s --health-start-period 120s \
  -e SERVING_PORT="$port" -e SERVING_LOG_FORMAT=text \
  "$image" >/dev/null

in_container() { docker exec -i "$name" "$@"; }
http_get() {  # prints the status code of GET path
  in_container python -c "import sys, urllib.request, urllib.error
try:
    print(urllib.request.urlopen('http://127.0.0.1:$port' + sys.argv[1], timeout=5).status)
except urllib.error.HTTPError as e:
    print(e.code)
except OSError:
    print(0)" "$1"
}

uid=$(in_container id -u)
gid=$(in_container id -g)
[ "$uid:$gid" = "10001:10001" ] || fail "runs as $uid:$gid, expected 10001:10001"
# Even root cannot write: proves --read-only took effect (the app ran on a read-only root).
if docker exec -u 0 "$name" touch /opt/probe 2>/dev/null; then fail "the root filesystem is writable"; fi

has_torch=$(in_container python -c "import importlib.util; print(importlib.util.find_spec('torch') is not None)")
if [ "$target" = cpu ]; then
  [ "$has_torch" = False ] || fail "the CPU image has torch installed; it must not"
  in_container test -f "$model_dir/manifest.json" || fail "no $model_dir/manifest.json in the CPU image"
else
  [ "$has_torch" = True ] || fail "the GPU image has no torch"
fi

status=0
for _ in $(seq 1 90); do
  status=$(http_get /ready)
  [ "$status" = 200 ] && break
  [ "$(docker inspect --format '{{.State.Running}}' "$name")" = true ] || fail "the container exited"
  sleep 2
done
[ "$status" = 200 ] || fail "/ready never returned 200 (last: $status)"
[ "$(http_get /health)" = 200 ] || fail "/health is not 200"

health=starting
for _ in $(seq 1 30); do
  health=$(docker inspect --format '{{.State.Health.Status}}' "$name")
  [ "$health" = healthy ] && break
  sleep 2
done
[ "$health" = healthy ] || fail "HEALTHCHECK status is '$health', not healthy"

# The photograph goes in through stdin; the response comes back as JSON.
in_container python -c "import sys, urllib.request
request = urllib.request.Request('http://127.0.0.1:$port/predict', data=sys.stdin.buffer.read(),
                                 headers={'Content-Type': 'image/jpeg'})
print(urllib.request.urlopen(request, timeout=60).read().decode())" < "$photo" > "$response"
python3 "$here/check_prediction.py" "$response" --expect "$expected" --top "$top" \
  || fail "the prediction for $(basename "$photo") is wrong"

started=$(date +%s)
docker stop --time 30 "$name" >/dev/null
took=$(($(date +%s) - started))
code=$(docker inspect --format '{{.State.ExitCode}}' "$name")
echo "stopped by SIGTERM in ${took}s with exit status $code"
[ "$code" = 0 ] || fail "exit status $code after SIGTERM (137 = killed: SIGTERM did not stop it)"
[ "$took" -lt 25 ] || fail "took ${took}s to stop after SIGTERM"
{
  echo "| $target image | $image |"
  echo "| --- | --- |"
  echo "| $(basename "$photo") | \"$expected\" in the top $top |"
  echo "| graceful stop | ${took} s, exit status 0 |"
} >> "$summary"
echo "smoke test passed: $target image $image"
