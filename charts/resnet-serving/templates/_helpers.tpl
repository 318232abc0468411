{{/*
The chart name, or nameOverride; 63 characters at most (a DNS label).
*/}}
{{- define "resnet-serving.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release-qualified full name used for every resource: fullnameOverride, else
"<release>-<name>" (or just the release name when it already contains the name), cut at 63.
*/}}
{{- define "resnet-serving.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, as used by the helm.sh/chart label.
*/}}
{{- define "resnet-serving.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels: the Deployment's selector, the Service's selector, the PDB's and the
ServiceMonitor's. Immutable on a Deployment: never change them in an upgrade.
*/}}
{{- define "resnet-serving.selectorLabels" -}}
app.kubernetes.io/name: {{ include "resnet-serving.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end }}

{{/*
Common labels on every resource of the chart.
*/}}
{{- define "resnet-serving.labels" -}}
helm.sh/chart: {{ include "resnet-serving.chart" . }}
{{ include "resnet-serving.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: resnet-serving
{{- end }}

{{/*
Labels of the `helm test` pod: the chart's labels with a component of its own, so that the
Service and the PDB never select it.
*/}}
{{- define "resnet-serving.testLabels" -}}
helm.sh/chart: {{ include "resnet-serving.chart" . }}
app.kubernetes.io/name: {{ include "resnet-serving.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: helm-test
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Labels that make a Prometheus (kube-prometheus-stack's selects `release: <its release>`) and
its Grafana sidecar pick up our ServiceMonitor, PrometheusRule and dashboards.
*/}}
{{- define "resnet-serving.monitoringLabels" -}}
release: {{ .Values.monitoring.release | default .Release.Name | quote }}
{{- with .Values.monitoring.labels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The ServiceAccount the pods run as.
*/}}
{{- define "resnet-serving.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "resnet-serving.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The container image: repository@digest when a digest is set, else repository:tag. The default
tag is the chart's appVersion for the CPU image and "<appVersion>-gpu" for the GPU image
(image.variant): the tags the workflow publishes.
*/}}
{{- define "resnet-serving.image" -}}
{{- include "resnet-serving.imageOf" (dict "root" . "image" .Values.image) }}
{{- end }}

{{/*
The same for any image values (`image`, or the canary's: `canary.image` over `image`).
*/}}
{{- define "resnet-serving.imageOf" -}}
{{- $image := .image }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- $tag := $image.tag | toString }}
{{- if not $image.tag }}
{{- $tag = .root.Chart.AppVersion | toString }}
{{- if eq ($image.variant | default "cpu") "gpu" }}
{{- $tag = printf "%s-gpu" $tag }}
{{- end }}
{{- end }}
{{- printf "%s:%s" $image.repository $tag }}
{{- end }}
{{- end }}

{{/*
Which build of the image runs: cpu (the default) or gpu.
*/}}
{{- define "resnet-serving.variant" -}}
{{- .Values.image.variant | default "cpu" }}
{{- end }}

{{/*
The two images differ in how they hold the model, and SERVING_MODEL_DIR must say which: the CPU
image has no torch and serves only the OpenVINO IR baked into it (SERVING_MODEL_DIR names it);
the GPU image has no IR and loads the weights with torch (SERVING_MODEL_DIR empty). Either
mismatch makes the app exit at start-up: fail at render time instead, naming the values.
*/}}
{{- define "resnet-serving.checkVariant" -}}
{{- $modelDir := include "resnet-serving.settingValue" .Values.config.SERVING_MODEL_DIR }}
{{- $variant := include "resnet-serving.variant" . }}
{{- if and (eq $variant "gpu") $modelDir }}
{{- fail (printf "image.variant gpu: the GPU image has no build-time OpenVINO IR; set config.SERVING_MODEL_DIR to \"\" (it is %q; values-gpu.yaml sets it empty)" $modelDir) }}
{{- end }}
{{- if and (eq $variant "cpu") (not $modelDir) }}
{{- fail "image.variant cpu: the CPU image has no torch to load the model at start-up; config.SERVING_MODEL_DIR must name the OpenVINO IR baked into it (/opt/model), or use image.variant gpu" }}
{{- end }}
{{- end }}

{{/*
One setting value as a ConfigMap string. Helm reads YAML numbers as floats: whole numbers are
printed without an exponent (10485760, not 1.048576e+07), booleans as true/false, null as "".
*/}}
{{- define "resnet-serving.settingValue" -}}
{{- $v := . }}
{{- if kindIs "invalid" $v }}
{{- "" }}
{{- else if kindIs "float64" $v }}
{{- if eq $v (floor $v) }}{{ int64 $v }}{{ else }}{{ $v }}{{ end }}
{{- else }}
{{- toString $v }}
{{- end }}
{{- end }}

{{/*
The container port, derived from SERVING_PORT so the two cannot disagree.
*/}}
{{- define "resnet-serving.containerPort" -}}
{{- include "resnet-serving.settingValue" (.Values.config.SERVING_PORT | default 8000) | int }}
{{- end }}

{{/*
The in-cluster URL of the Service.
*/}}
{{- define "resnet-serving.serviceURL" -}}
{{- printf "http://%s.%s.svc:%d" (include "resnet-serving.fullname" .) .Release.Namespace (.Values.service.port | int) }}
{{- end }}

{{/*
The separate metrics port (SERVING_METRICS_PORT), or 0 when /metrics is on the http port.
*/}}
{{- define "resnet-serving.metricsPort" -}}
{{- include "resnet-serving.settingValue" (.Values.config.SERVING_METRICS_PORT | default 0) | int }}
{{- end }}

{{/*
The named container port Prometheus scrapes: `metrics` when it is separate, else `http`.
*/}}
{{- define "resnet-serving.metricsPortName" -}}
{{- if gt (include "resnet-serving.metricsPort" . | int) 0 }}metrics{{ else }}http{{ end }}
{{- end }}

{{/*
The gRPC port of the Open Inference Protocol (SERVING_GRPC_PORT), or 0 when it is off. The app's
default is 8001, so an unset value means 8001 here too; only an explicit 0 turns it off.
*/}}
{{- define "resnet-serving.grpcPort" -}}
{{- $v := .Values.config.SERVING_GRPC_PORT }}
{{- if kindIs "invalid" $v }}{{ $v = 8001 }}{{ end }}
{{- include "resnet-serving.settingValue" $v | int }}
{{- end }}

{{/*
Two ports of one pod or one Service must differ: the app refuses to start with a port taken
twice, and the API server refuses a Service with a port number twice. Fail at render time,
naming the values, instead of a crash-looping pod or a rejected manifest.
*/}}
{{- define "resnet-serving.checkPorts" -}}
{{- $http := include "resnet-serving.containerPort" . | int }}
{{- $metrics := include "resnet-serving.metricsPort" . | int }}
{{- $grpc := include "resnet-serving.grpcPort" . | int }}
{{- $service := int .Values.service.port }}
{{- if and (gt $grpc 0) (eq $grpc $http) }}
{{- fail (printf "config.SERVING_GRPC_PORT (%d) must differ from config.SERVING_PORT (or be 0)" $grpc) }}
{{- end }}
{{- if and (gt $grpc 0) (eq $grpc $metrics) }}
{{- fail (printf "config.SERVING_GRPC_PORT (%d) must differ from config.SERVING_METRICS_PORT (or one of them be 0)" $grpc) }}
{{- end }}
{{- if and (gt $metrics 0) (eq $metrics $http) }}
{{- fail (printf "config.SERVING_METRICS_PORT (%d) must differ from config.SERVING_PORT (or be 0)" $metrics) }}
{{- end }}
{{- if and (gt $grpc 0) (eq $grpc $service) }}
{{- fail (printf "service.port (%d) must differ from config.SERVING_GRPC_PORT, which the Service also exposes" $service) }}
{{- end }}
{{- if and (gt $metrics 0) (eq $metrics $service) }}
{{- fail (printf "service.port (%d) must differ from config.SERVING_METRICS_PORT, which the Service also exposes" $service) }}
{{- end }}
{{- $nodePort := .Values.service.nodePort | default 0 | int }}
{{- if and (ne .Values.service.type "ClusterIP") (gt $grpc 0) (gt $nodePort 0) (eq $nodePort (.Values.service.grpcNodePort | default 0 | int)) }}
{{- fail (printf "service.grpcNodePort (%d) must differ from service.nodePort" $nodePort) }}
{{- end }}
{{- end }}

{{/*
The Secret with SERVING_API_KEYS and the key in it, or nothing when API keys are off.
*/}}
{{- define "resnet-serving.apiKeysSecret" -}}
{{- if .Values.apiKeys.existingSecret -}}
{{ .Values.apiKeys.existingSecret }}
{{- else if .Values.apiKeys.keys -}}
{{ include "resnet-serving.fullname" . }}-api-keys
{{- end }}
{{- end }}
{{- define "resnet-serving.apiKeysSecretKey" -}}
{{- if .Values.apiKeys.existingSecret }}{{ .Values.apiKeys.existingSecretKey }}{{ else }}api-keys{{ end }}
{{- end }}

{{/*
SIGTERM handling must fit in the grace period: the preStop pause, then up to
SERVING_GRACEFUL_TIMEOUT_S for open requests, then a moment for shutdown. Refuse to render a
Deployment whose pods would be killed mid-request.
*/}}
{{- define "resnet-serving.checkGrace" -}}
{{- $graceful := include "resnet-serving.settingValue" (.Values.config.SERVING_GRACEFUL_TIMEOUT_S | default 20) | float64 | ceil | int }}
{{- $needed := add (int .Values.lifecycle.preStopSleepSeconds) $graceful 2 }}
{{- if lt (int .Values.terminationGracePeriodSeconds) (int $needed) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be at least lifecycle.preStopSleepSeconds + SERVING_GRACEFUL_TIMEOUT_S + 2 = %d" (int .Values.terminationGracePeriodSeconds) (int $needed)) }}
{{- end }}
{{- end }}

{{/*
The prediction cache's Redis (values `cache.redis`): `enabled` deploys one beside the release,
`url` names one the user runs. Both at once is a mistake: fail at render time, naming them.
*/}}
{{- define "resnet-serving.checkCache" -}}
{{- if and .Values.cache.redis.enabled .Values.cache.redis.url }}
{{- fail "cache.redis.enabled and cache.redis.url are exclusive: enabled deploys a Redis with the release, url points at one you already run; set one of them" }}
{{- end }}
{{- end }}

{{/*
Name of the chart's Redis Deployment, Service, Secret and NetworkPolicy: "<fullname>-redis",
the full name cut to leave room for the suffix (a Service name is a 63-character DNS label).
*/}}
{{- define "resnet-serving.redisFullname" -}}
{{- printf "%s-redis" (include "resnet-serving.fullname" . | trunc 57 | trimSuffix "-") }}
{{- end }}

{{/*
Selector labels of the Redis pod: a component of its own (`cache`), so the server's Service,
PDB, HPA, ServiceMonitor and NetworkPolicy (component `server`) never select it.
*/}}
{{- define "resnet-serving.redisSelectorLabels" -}}
app.kubernetes.io/name: {{ include "resnet-serving.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: cache
{{- end }}

{{/*
Labels of every Redis object.
*/}}
{{- define "resnet-serving.redisLabels" -}}
helm.sh/chart: {{ include "resnet-serving.chart" . }}
{{ include "resnet-serving.redisSelectorLabels" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: resnet-serving
{{- end }}

{{/*
The Redis image: repository@digest when a digest is set, else repository:tag.
*/}}
{{- define "resnet-serving.redisImage" -}}
{{- $image := .Values.cache.redis.image }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository ($image.tag | toString) }}
{{- end }}
{{- end }}

{{/*
SERVING_CACHE_REDIS_URL: the chart's Redis (same namespace, database 0), the user's `url`, or
nothing (no shared tier).
*/}}
{{- define "resnet-serving.redisURL" -}}
{{- if .Values.cache.redis.enabled -}}
redis://{{ include "resnet-serving.redisFullname" . }}:6379/0
{{- else -}}
{{ .Values.cache.redis.url }}
{{- end }}
{{- end }}

{{/*
Whether the chart creates the password Secret: for its own Redis unless an existing Secret is
named; for the user's Redis only when `password` is given.
*/}}
{{- define "resnet-serving.redisCreateSecret" -}}
{{- $r := .Values.cache.redis }}
{{- if and (not $r.existingSecret) (or $r.enabled (and $r.url $r.password)) }}true{{ end }}
{{- end }}

{{/*
The Secret with the Redis password and the key in it, or nothing when there is no password.
*/}}
{{- define "resnet-serving.redisSecret" -}}
{{- $r := .Values.cache.redis }}
{{- if and $r.existingSecret (or $r.enabled $r.url) -}}
{{ $r.existingSecret }}
{{- else if include "resnet-serving.redisCreateSecret" . -}}
{{ include "resnet-serving.redisFullname" . }}
{{- end }}
{{- end }}
{{- define "resnet-serving.redisSecretKey" -}}
{{- if .Values.cache.redis.existingSecret }}{{ .Values.cache.redis.existingSecretPasswordKey }}{{ else }}redis-password{{ end }}
{{- end }}

{{/*
The password of the Secret the chart creates: `cache.redis.password`, else the one the Secret
already holds (kept across upgrades), else 32 random characters. Generated once per render and
remembered in the render's top-level context, so the Secret and the checksum annotations of the
pods that read it agree.
*/}}
{{- define "resnet-serving.redisPassword" -}}
{{- if .Values.cache.redis.password }}
{{- .Values.cache.redis.password }}
{{- else }}
{{- if not (hasKey $ "redisPasswordOfThisRender") }}
{{- $password := randAlphaNum 32 }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "resnet-serving.redisFullname" .) }}
{{- if and $existing $existing.data (hasKey $existing.data "redis-password") }}
{{- $password = index $existing.data "redis-password" | b64dec }}
{{- end }}
{{- $_ := set $ "redisPasswordOfThisRender" $password }}
{{- end }}
{{- index $ "redisPasswordOfThisRender" }}
{{- end }}
{{- end }}

{{/*
Tracing (values `tracing`) needs somewhere to send the spans: fail at render time, naming the
value, instead of pods that export to the SDK's default (localhost) and lose every span.
*/}}
{{- define "resnet-serving.checkTracing" -}}
{{- if and .Values.tracing.enabled (not .Values.tracing.endpoint) }}
{{- fail "tracing.enabled needs tracing.endpoint: the OTLP receiver's base URL, e.g. http://jaeger-collector.observability:4318 (http/protobuf) or :4317 (grpc)" }}
{{- end }}
{{- end }}

{{/*
The standard OpenTelemetry variables of the server container when `tracing.enabled` (a list of
EnvVar). The downward-API variables come before OTEL_RESOURCE_ATTRIBUTES, which refers to them
with Kubernetes' $(VAR) expansion (only variables defined earlier in the list expand). The
user's `resourceAttributes` come last: the same key there wins. OTEL_TRACES_SAMPLER_ARG only
for the samplers that take a ratio.
*/}}
{{- define "resnet-serving.tracingEnv" -}}
{{- $t := .Values.tracing -}}
{{- $attributes := list "k8s.pod.name=$(K8S_POD_NAME)" "k8s.namespace.name=$(K8S_NAMESPACE_NAME)" "k8s.node.name=$(K8S_NODE_NAME)" "k8s.pod.uid=$(K8S_POD_UID)" (printf "service.version=%s" .Chart.AppVersion) -}}
{{- range $key, $value := $t.resourceAttributes }}
{{- $attributes = append $attributes (printf "%s=%s" $key (include "resnet-serving.settingValue" $value)) }}
{{- end -}}
- name: OTEL_TRACES_EXPORTER
  value: otlp
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ $t.endpoint | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ $t.protocol | quote }}
- name: OTEL_SERVICE_NAME
  value: {{ $t.serviceName | default (include "resnet-serving.fullname" .) | quote }}
- name: OTEL_TRACES_SAMPLER
  value: {{ $t.sampler | quote }}
{{- if hasSuffix "traceidratio" $t.sampler }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ include "resnet-serving.settingValue" $t.samplerRatio | quote }}
{{- end }}
- name: K8S_POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: K8S_NAMESPACE_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: K8S_NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
- name: K8S_POD_UID
  valueFrom:
    fieldRef:
      fieldPath: metadata.uid
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ join "," $attributes | quote }}
{{- end }}
