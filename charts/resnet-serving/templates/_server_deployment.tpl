{{/*
A Deployment of the server: the stable one (deployment.yaml) and the canary's
(canary-deployment.yaml) differ only in what this takes: a dict of
  root            the chart's top-level context
  name            the Deployment's name
  labels          its labels and its pods' (YAML)
  selectorLabels  its selector (YAML; immutable once created)
  configMap       the ConfigMap loaded with envFrom
  configChecksum  the hash of that ConfigMap's template, so that a change to it rolls the pods
  image           the image values (repository, tag, digest, variant)
  replicas        the pod count, or "" when an HPA owns it
  resources       the container's resources
  modelVersion    SERVING_MODEL_VERSION: the label in every answer and on every metric
  env             more env entries (YAML list), e.g. the stable's shadow of the canary
*/}}
{{- define "resnet-serving.serverDeployment" -}}
{{- $root := .root -}}
{{- $fullname := .name -}}
{{- $selector := .selectorLabels | fromYaml -}}
{{- $apiKeysSecret := include "resnet-serving.apiKeysSecret" $root -}}
{{- $redisURL := include "resnet-serving.redisURL" $root -}}
{{- $redisSecret := include "resnet-serving.redisSecret" $root -}}
{{- $metricsPort := include "resnet-serving.metricsPort" $root | int -}}
{{- $grpcPort := include "resnet-serving.grpcPort" $root | int -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $fullname }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- .labels | nindent 4 }}
  {{- with $root.Values.deploymentAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  {{- if ne (toString .replicas) "" }}
  replicas: {{ .replicas }}
  {{- end }}
  revisionHistoryLimit: {{ $root.Values.revisionHistoryLimit }}
  minReadySeconds: {{ $root.Values.minReadySeconds }}
  strategy:
    {{- toYaml $root.Values.strategy | nindent 4 }}
  selector:
    matchLabels:
      {{- .selectorLabels | nindent 6 }}
  template:
    metadata:
      labels:
        {{- .labels | nindent 8 }}
        {{- with $root.Values.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        # A change to the settings changes this hash, so `helm upgrade` rolls the pods.
        checksum/config: {{ .configChecksum }}
        {{- if and $apiKeysSecret (not $root.Values.apiKeys.existingSecret) }}
        # Rotating keys the chart manages rolls the pods too.
        checksum/api-keys: {{ include (print $root.Template.BasePath "/secret-api-keys.yaml") $root | sha256sum }}
        {{- end }}
        {{- if include "resnet-serving.redisCreateSecret" $root }}
        # So does a new Redis password in the Secret the chart manages.
        checksum/redis-password: {{ include (print $root.Template.BasePath "/redis-secret.yaml") $root | sha256sum }}
        {{- end }}
        {{- with $root.Values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "resnet-serving.serviceAccountName" $root }}
      automountServiceAccountToken: {{ $root.Values.serviceAccount.automountServiceAccountToken }}
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      terminationGracePeriodSeconds: {{ $root.Values.terminationGracePeriodSeconds }}
      containers:
        - name: server
          image: {{ include "resnet-serving.imageOf" (dict "root" $root "image" .image) | quote }}
          imagePullPolicy: {{ .image.pullPolicy }}
          ports:
            - name: http
              containerPort: {{ include "resnet-serving.containerPort" $root }}
              protocol: TCP
            {{- if gt $metricsPort 0 }}
            - name: metrics
              containerPort: {{ $metricsPort }}
              protocol: TCP
            {{- end }}
            {{- if gt $grpcPort 0 }}
            # The Open Inference Protocol over gRPC. The probes stay on `http`: one health
            # source for the kubelet, whatever the clients speak.
            - name: grpc
              containerPort: {{ $grpcPort }}
              protocol: TCP
            {{- end }}
          envFrom:
            - configMapRef:
                name: {{ .configMap }}
            {{- with $root.Values.extraEnvFrom }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          env:
            # The root filesystem is read-only: anything that wants a home or temp dir gets /tmp.
            - name: HOME
              value: /tmp
            - name: TMPDIR
              value: /tmp
            # The version label (values `modelVersion`, `canary.modelVersion`): in every answer
            # (`model_version`, X-Model-Version) and on every metric.
            - name: SERVING_MODEL_VERSION
              value: {{ .modelVersion | toString | quote }}
            {{- with .env }}
            {{- . | nindent 12 }}
            {{- end }}
            {{- if $apiKeysSecret }}
            - name: SERVING_API_KEYS
              valueFrom:
                secretKeyRef:
                  name: {{ $apiKeysSecret }}
                  key: {{ include "resnet-serving.apiKeysSecretKey" $root }}
            {{- end }}
            {{- if $redisURL }}
            # The prediction cache's shared tier (values `cache.redis`); these win over the
            # ConfigMap's envFrom.
            - name: SERVING_CACHE_REDIS_URL
              value: {{ $redisURL | quote }}
            {{- end }}
            {{- if $redisSecret }}
            - name: SERVING_CACHE_REDIS_PASSWORD
              valueFrom:
                secretKeyRef:
                  name: {{ $redisSecret }}
                  key: {{ include "resnet-serving.redisSecretKey" $root }}
            {{- end }}
            {{- if $root.Values.tracing.enabled }}
            # OpenTelemetry tracing (values `tracing`): the standard OTEL_* variables.
            {{- include "resnet-serving.tracingEnv" $root | nindent 12 }}
            {{- end }}
            {{- with $root.Values.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          livenessProbe:
            {{- toYaml $root.Values.livenessProbe | nindent 12 }}
          readinessProbe:
            {{- toYaml $root.Values.readinessProbe | nindent 12 }}
          startupProbe:
            {{- toYaml $root.Values.startupProbe | nindent 12 }}
          {{- if gt (int $root.Values.lifecycle.preStopSleepSeconds) 0 }}
          lifecycle:
            preStop:
              exec:
                command: ["/bin/sleep", "{{ int $root.Values.lifecycle.preStopSleepSeconds }}"]
          {{- end }}
          resources:
            {{- toYaml .resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
      volumes:
        - name: tmp
          {{- $emptyDir := dict }}
          {{- with $root.Values.tmpVolume.medium }}{{ $_ := set $emptyDir "medium" . }}{{ end }}
          {{- with $root.Values.tmpVolume.sizeLimit }}{{ $_ := set $emptyDir "sizeLimit" . }}{{ end }}
          emptyDir: {{- if $emptyDir }}{{ toYaml $emptyDir | nindent 12 }}{{ else }} {}{{ end }}
      {{- with $root.Values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- range . }}
        {{- $constraint := deepCopy . }}
        {{- if not (hasKey $constraint "labelSelector") }}
        {{- $_ := set $constraint "labelSelector" (dict "matchLabels" $selector) }}
        {{- end }}
        - {{- toYaml $constraint | nindent 10 }}
        {{- end }}
      {{- end }}
{{- end }}
