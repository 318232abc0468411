#!/usr/bin/env bash
# Zero-downtime proof for the kind job: a `helm upgrade` that changes a value rolls every pod
# while a load generator in the cluster keeps calling POST /predict through the Service; one
# failed request fails the job. Then checks that the pods really were replaced and that the new
# value is live (SERVING_TOP_K=3 -> 3 predictions).
#
# Environment (defaults fit the CI job): NAMESPACE, RELEASE, CHART, IMAGE (already in the
# cluster), PHOTO (a JPEG), SERVICE_PORT, EXTRA_UPGRADE_ARGS (more helm flags, word-split).
set -euo pipefail

NAMESPACE=${NAMESPACE:-resnet-serving}
RELEASE=${RELEASE:-resnet-serving}
CHART=${CHART:-charts/resnet-serving}
IMAGE=${IMAGE:-resnet-serving:ci}
PHOTO=${PHOTO:-/tmp/grace_hopper.jpg}
SERVICE_PORT=${SERVICE_PORT:-8080}
here=$(cd "$(dirname "$0")" && pwd)
selector="app.kubernetes.io/instance=$RELEASE,app.kubernetes.io/component=server"
k() { kubectl --namespace "$NAMESPACE" "$@"; }
log() { printf '==> %s\n' "$*"; }
fail() {
  echo "::error title=Zero-downtime rollout::$*"
  k logs pod/loadgen --tail=60 2>/dev/null || true
  exit 1
}

log "load generator: ConfigMap with the script and the photograph, then the pod"
k delete pod loadgen --ignore-not-found --wait=true >/dev/null
k create configmap loadgen --from-file=loadgen.py="$here/loadgen.py" \
  --from-file=photo.jpg="$PHOTO" --dry-run=client -o yaml | k apply -f - >/dev/null
k apply -f - <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: loadgen
  labels:
    app.kubernetes.io/name: loadgen
    app.kubernetes.io/component: e2e-loadgen
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  securityContext:
    runAsNonRoot: true
    runAsUser: 10001
    runAsGroup: 10001
    seccompProfile: {type: RuntimeDefault}
  containers:
    - name: loadgen
      image: $IMAGE
      imagePullPolicy: IfNotPresent
      command: ["python", "/loadgen/loadgen.py"]
      args:
        - --url=http://$RELEASE.$NAMESPACE.svc:$SERVICE_PORT/predict
        - --image=/loadgen/photo.jpg
        - --stop-file=/tmp/loadgen.stop
        - --concurrency=2
        - --min-requests=20
        - --max-seconds=900
      resources:
        requests: {cpu: 100m, memory: 64Mi}
        limits: {cpu: 500m, memory: 256Mi}
      securityContext:
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities: {drop: [ALL]}
      volumeMounts:
        - {name: script, mountPath: /loadgen, readOnly: true}
        - {name: tmp, mountPath: /tmp}
  volumes:
    - name: script
      configMap: {name: loadgen}
    - name: tmp
      emptyDir: {}
EOF

log "waiting for the load generator's first successful request"
running=false
for _ in $(seq 1 120); do
  if k logs pod/loadgen 2>/dev/null | grep -q '^loadgen: running'; then running=true; break; fi
  phase=$(k get pod loadgen -o jsonpath='{.status.phase}')
  if [ "$phase" = Failed ] || [ "$phase" = Succeeded ]; then break; fi
  sleep 2
done
[ "$running" = true ] || fail "the load generator never got a successful response"

old_pods=$(k get pods -l "$selector" -o jsonpath='{.items[*].metadata.name}')
log "pods before the upgrade: $old_pods"

log "helm upgrade (changes SERVING_TOP_K: the config checksum rolls every pod) under load"
started=$(date +%s)
# shellcheck disable=SC2086  # EXTRA_UPGRADE_ARGS is a list of flags
helm upgrade "$RELEASE" "$CHART" --namespace "$NAMESPACE" --reuse-values \
  --set-string config.SERVING_TOP_K=3 ${EXTRA_UPGRADE_ARGS:-} --wait --timeout 5m
log "upgrade done in $(($(date +%s) - started)) s; waiting for the old pods to be gone"
for pod in $old_pods; do
  k wait --for=delete "pod/$pod" --timeout=180s >/dev/null 2>&1 || true
  if k get pod "$pod" >/dev/null 2>&1; then fail "old pod $pod is still there"; fi
done
sleep 5  # a little traffic on the new pods alone

log "stopping the load generator"
k exec loadgen -- touch /tmp/loadgen.stop
phase=Running
for _ in $(seq 1 60); do
  phase=$(k get pod loadgen -o jsonpath='{.status.phase}')
  if [ "$phase" = Succeeded ] || [ "$phase" = Failed ]; then break; fi
  sleep 2
done
k logs pod/loadgen | grep -v '^loadgen: t=' || true
summary=$(k logs pod/loadgen | sed -n 's/^loadgen: summary //p')
echo "### Zero-downtime rollout" >> "${GITHUB_STEP_SUMMARY:-/dev/null}"
echo "\`$summary\`" >> "${GITHUB_STEP_SUMMARY:-/dev/null}"
[ "$phase" = Succeeded ] || fail "requests failed during the rollout (load generator: $phase)"

new_pods=$(k get pods -l "$selector" -o jsonpath='{.items[*].metadata.name}')
log "pods after the upgrade: $new_pods"
for pod in $new_pods; do
  case " $old_pods " in *" $pod "*) fail "pod $pod survived the upgrade: nothing was rolled" ;; esac
done
[ -n "$new_pods" ] || fail "no pods after the upgrade"

log "the new value is live: /predict now returns 3 predictions"
k port-forward "svc/$RELEASE" 18080:"$SERVICE_PORT" >/tmp/port-forward-rollout.log 2>&1 &
pf=$!
trap 'kill $pf 2>/dev/null || true' EXIT
for _ in $(seq 1 30); do
  curl -sf http://127.0.0.1:18080/health >/dev/null && break
  sleep 1
done
curl -sS --fail-with-body -F file=@"$PHOTO" http://127.0.0.1:18080/predict > /tmp/predict-after.json
python3 "$here/check_prediction.py" /tmp/predict-after.json --count 3 \
  || fail "the upgraded value is not live"
log "zero-downtime rollout passed"
