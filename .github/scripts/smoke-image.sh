#!/usr/bin/env bash
# Runs the built image the way the Helm chart does and checks what the Dockerfile promises:
#   - starts with a read-only root filesystem, /tmp as tmpfs, no capabilities, no new privileges;
#   - runs as UID/GID 10001 (the chart's runAsUser/runAsGroup);
#   - its HEALTHCHECK turns "healthy" (interval shortened here, command unchanged);
#   - /ready turns 200 with the baked weights (no download: the container has no network);
#   - /predict on a real photograph ranks the expected ImageNet class in its top 5;
#   - SIGTERM (docker stop) ends it gracefully: exit status 0, well before the kill timeout;
#   - its size is under 2 GB (fails) and under 1 GB (warns otherwise).
# Usage: smoke-image.sh IMAGE PHOTO EXPECTED_LABEL
set -euo pipefail

image=$1
photo=$2
expected=$3
name=resnet-serving-smoke
port=18000
here=$(cd "$(dirname "$0")" && pwd)
summary=${GITHUB_STEP_SUMMARY:-/dev/null}

cleanup() { docker rm -f "$name" >/dev/null 2>&1 || true; }
trap cleanup EXIT
fail() {
  echo "::error title=Image smoke test::$*"
  docker logs "$name" 2>&1 | tail -n 50 || true
  exit 1
}

size=$(docker image inspect --format '{{.Size}}' "$image")
size_mb=$((size / 1000000))
echo "image size: ${size_mb} MB"
echo "| image size | ${size_mb} MB |" >> "$summary"
[ "$size" -lt 2000000000 ] || fail "image is ${size_mb} MB, over the 2 GB limit"
[ "$size" -lt 1000000000 ] || echo "::warning title=Image size::${size_mb} MB, over the 1 GB target"

# --network none: the weights must be in the image, nothing may be downloaded at start-up.
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
print(urllib.request.urlopen(request, timeout=60).read().decode())" < "$photo" > /tmp/smoke-predict.json
python3 "$here/check_prediction.py" /tmp/smoke-predict.json --expect "$expected" --top 5 \
  || fail "the prediction for $(basename "$photo") is wrong"

started=$(date +%s)
docker stop --time 30 "$name" >/dev/null
took=$(($(date +%s) - started))
code=$(docker inspect --format '{{.State.ExitCode}}' "$name")
echo "stopped by SIGTERM in ${took}s with exit status $code"
[ "$code" = 0 ] || fail "exit status $code after SIGTERM (137 = killed: SIGTERM did not stop it)"
[ "$took" -lt 25 ] || fail "took ${took}s to stop after SIGTERM"
echo "| graceful stop | ${took} s, exit status 0 |" >> "$summary"
echo "smoke test passed: $image"
