{{/*
A/B testing (values `modelVersion`, `canary`, `router`; docs/DEPLOYMENT.md, "A/B testing and
canary releases"). With a canary, or `router.enabled`, the release's Service selects an nginx
router instead of the serving pods; the router splits requests between two Services of its
own, `<fullname>-stable` and `<fullname>-canary`.
*/}}

{{/*
"true" when the router runs: the canary needs it, and `router.enabled` keeps it between
experiments, so that starting or ending one never moves the release's Service.
*/}}
{{- define "resnet-serving.routed" -}}
{{- if or .Values.canary.enabled .Values.router.enabled }}true{{ end }}
{{- end }}

{{/*
Names: "<fullname>-<suffix>", the full name cut so that the result is a 63-character DNS label.
*/}}
{{- define "resnet-serving.suffixedName" -}}
{{- $root := index . 0 }}{{ $suffix := index . 1 }}
{{- printf "%s-%s" (include "resnet-serving.fullname" $root | trunc (int (sub 62 (len $suffix))) | trimSuffix "-") $suffix }}
{{- end }}
{{- define "resnet-serving.canaryFullname" -}}
{{- include "resnet-serving.suffixedName" (list . "canary") }}
{{- end }}
{{- define "resnet-serving.stableServiceName" -}}
{{- include "resnet-serving.suffixedName" (list . "stable") }}
{{- end }}
{{- define "resnet-serving.routerFullname" -}}
{{- include "resnet-serving.suffixedName" (list . "router") }}
{{- end }}

{{/*
Selector labels of the canary's pods: a component of their own (`canary`), so that the stable
Deployment's selector (component `server`, immutable) never matches them, nor its PDB and HPA.
*/}}
{{- define "resnet-serving.canarySelectorLabels" -}}
app.kubernetes.io/name: {{ include "resnet-serving.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: canary
{{- end }}
{{- define "resnet-serving.canaryLabels" -}}
helm.sh/chart: {{ include "resnet-serving.chart" . }}
{{ include "resnet-serving.canarySelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: resnet-serving
{{- end }}

{{/*
Selector labels and labels of the router's pods (component `router`).
*/}}
{{- define "resnet-serving.routerSelectorLabels" -}}
app.kubernetes.io/name: {{ include "resnet-serving.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: router
{{- end }}
{{- define "resnet-serving.routerLabels" -}}
helm.sh/chart: {{ include "resnet-serving.chart" . }}
{{ include "resnet-serving.routerSelectorLabels" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: resnet-serving
{{- end }}

{{/*
The canary's settings: the stable's `config` with `canary.config` over it.
*/}}
{{- define "resnet-serving.canaryConfig" -}}
{{- toYaml (merge (deepCopy .Values.canary.config) (deepCopy .Values.config)) }}
{{- end }}

{{/*
The canary's image values: the stable's `image` with `canary.image` over it.
*/}}
{{- define "resnet-serving.canaryImageValues" -}}
{{- toYaml (merge (deepCopy .Values.canary.image) (deepCopy .Values.image)) }}
{{- end }}

{{/*
Render-time refusals of an A/B set-up that cannot work, naming the values: a version label the
app would refuse (SERVING_MODEL_VERSION), the same label twice, a percent outside 0-100, a
canary that changes no model (it would only measure noise), and the label set through `config`
(the chart sets SERVING_MODEL_VERSION from `modelVersion` and `canary.modelVersion`).
*/}}
{{- define "resnet-serving.checkAB" -}}
{{- $label := "^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$" }}
{{- if not (regexMatch $label (toString .Values.modelVersion)) }}
{{- fail (printf "modelVersion %q: a version label is 1-32 letters, digits, '.', '_' or '-', starting with a letter or digit" (toString .Values.modelVersion)) }}
{{- end }}
{{- if hasKey .Values.config "SERVING_MODEL_VERSION" }}
{{- fail "config.SERVING_MODEL_VERSION: set modelVersion instead (the chart sets SERVING_MODEL_VERSION from modelVersion and canary.modelVersion)" }}
{{- end }}
{{- $c := .Values.canary }}
{{- if $c.enabled }}
{{- if not (regexMatch $label (toString $c.modelVersion)) }}
{{- fail (printf "canary.modelVersion %q: a version label is 1-32 letters, digits, '.', '_' or '-', starting with a letter or digit" (toString $c.modelVersion)) }}
{{- end }}
{{- if eq (toString $c.modelVersion) (toString .Values.modelVersion) }}
{{- fail (printf "canary.modelVersion must differ from modelVersion (both are %q): answers, metrics and the A/B dashboard tell the two versions apart by it" (toString .Values.modelVersion)) }}
{{- end }}
{{- $percent := $c.trafficPercent | float64 }}
{{- if or (lt $percent 0.0) (gt $percent 100.0) }}
{{- fail (printf "canary.trafficPercent (%v) must be between 0 and 100" $c.trafficPercent) }}
{{- end }}
{{- $shadow := $c.shadowPercent | default 0 | float64 }}
{{- if or (lt $shadow 0.0) (gt $shadow 100.0) }}
{{- fail (printf "canary.shadowPercent (%v) must be between 0 and 100" $c.shadowPercent) }}
{{- end }}
{{- if hasKey ($c.config | default dict) "SERVING_MODEL_VERSION" }}
{{- fail "canary.config.SERVING_MODEL_VERSION: set canary.modelVersion instead" }}
{{- end }}
{{- /* A model change: another image, or a setting that decides the model or how it runs. */}}
{{- $changed := false }}
{{- $stableImage := include "resnet-serving.image" . }}
{{- $canaryImage := include "resnet-serving.imageOf" (dict "root" . "image" (include "resnet-serving.canaryImageValues" . | fromYaml)) }}
{{- if ne $stableImage $canaryImage }}{{ $changed = true }}{{ end }}
{{- range $key := list "SERVING_MODEL_NAME" "SERVING_MODEL_WEIGHTS" "SERVING_MODEL_DIR" "SERVING_RANDOM_SEED" "SERVING_PRECISION" "SERVING_BACKEND" "SERVING_DEVICE" "SERVING_COMPILE" }}
{{- if hasKey ($c.config | default dict) $key }}
{{- if ne (include "resnet-serving.settingValue" (index $c.config $key)) (include "resnet-serving.settingValue" (index $.Values.config $key)) }}{{ $changed = true }}{{ end }}
{{- end }}
{{- end }}
{{- if not $changed }}
{{- fail "canary: no model change. Give the canary another image (canary.image) or another model in canary.config (SERVING_MODEL_NAME, SERVING_MODEL_WEIGHTS, SERVING_MODEL_DIR, SERVING_RANDOM_SEED, SERVING_PRECISION, SERVING_BACKEND, SERVING_DEVICE or SERVING_COMPILE); the same model twice only measures noise" }}
{{- end }}
{{- $canaryConfig := include "resnet-serving.canaryConfig" . | fromYaml }}
{{- if ne (include "resnet-serving.settingValue" ($canaryConfig.SERVING_PORT | default 8000)) (include "resnet-serving.settingValue" (.Values.config.SERVING_PORT | default 8000)) }}
{{- fail "canary.config.SERVING_PORT must equal config.SERVING_PORT: the router reaches both versions on one port" }}
{{- end }}
{{- if ne (include "resnet-serving.settingValue" ($canaryConfig.SERVING_GRPC_PORT | default 8001)) (include "resnet-serving.settingValue" (.Values.config.SERVING_GRPC_PORT | default 8001)) }}
{{- fail "canary.config.SERVING_GRPC_PORT must equal config.SERVING_GRPC_PORT: the router reaches both versions on one port" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The largest request body any route of the app accepts, in bytes (app/api/bodies.py): an Open
Inference Protocol call of SERVING_MAX_BATCH_FILES images in base64 plus 64 KiB of framing. The
router's own limit is this, so that it never refuses what the app would take, and the app's
per-route caps (and its 413 body) apply below it.
*/}}
{{- define "resnet-serving.largestBody" -}}
{{- $upload := include "resnet-serving.settingValue" (.Values.config.SERVING_MAX_UPLOAD_BYTES | default 10485760) | int64 }}
{{- $files := include "resnet-serving.settingValue" (.Values.config.SERVING_MAX_BATCH_FILES | default 16) | int64 }}
{{- $raw := mul $upload $files }}
{{- add (mul 4 (div (add $raw 2) 3)) 65536 }}
{{- end }}

{{/*
How long the router waits for an answer, in seconds: the longest deadline a client may ask for
(SERVING_MAX_REQUEST_TIMEOUT_S) plus `router.timeoutMarginSeconds`, so the app's own 503/504 and
their bodies always arrive before the router would give up.
*/}}
{{- define "resnet-serving.routerReadTimeout" -}}
{{- $deadline := include "resnet-serving.settingValue" (.Values.config.SERVING_MAX_REQUEST_TIMEOUT_S | default 60) | float64 | ceil | int }}
{{- add $deadline (int .Values.router.timeoutMarginSeconds) }}
{{- end }}

{{/*
The router's image: repository@digest when a digest is set, else repository:tag.
*/}}
{{- define "resnet-serving.routerImage" -}}
{{- $image := .Values.router.image }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository ($image.tag | toString) }}
{{- end }}
{{- end }}
