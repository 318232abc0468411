{{/*
The router's nginx.conf (router-configmap.yaml). tests/router/ runs exactly this, rendered from
the chart, with the real nginx on loopback in front of two app processes.

Which version serves a request, first match wins:
  1. the protocol's versioned path /v2/models/<name>/versions/<label>/...
  2. the X-Model-Version header
  3. X-Client-Id: its hash picks the version, so a client always lands on the same one
  4. else the request id's hash: a random split at canary.trafficPercent
An unknown label is refused by the router itself (400 for the header, 404 for the path, gRPC
INVALID_ARGUMENT), with the app's error format.
*/}}
{{- define "resnet-serving.routerConfig" -}}
{{- $r := .Values.router -}}
{{- $c := .Values.canary -}}
{{- $http := include "resnet-serving.containerPort" . | int -}}
{{- $grpc := include "resnet-serving.grpcPort" . | int -}}
{{- $stable := printf "%s.%s.svc" (include "resnet-serving.stableServiceName" .) .Release.Namespace -}}
{{- $canary := printf "%s.%s.svc" (include "resnet-serving.canaryFullname" .) .Release.Namespace -}}
{{- $timeout := include "resnet-serving.routerReadTimeout" . | int -}}
{{- $stableLabel := toString .Values.modelVersion -}}
{{- $canaryLabel := toString $c.modelVersion -}}
{{- $known := $stableLabel -}}
{{- if $c.enabled }}{{ $known = printf "%s, %s" $stableLabel $canaryLabel }}{{ end -}}
{{- $percent := $c.trafficPercent | float64 -}}
{{- /* Upstream connections live shorter than a server pod's preStop pause: a pod leaving the
       Service (rollout, scale-in, canary removal) has no connection of the router left by the
       time it drains, so no request reaches it then (it would answer 503 not_ready). */ -}}
{{- $connectionLife := max 1 (sub (int .Values.lifecycle.preStopSleepSeconds) 2) -}}
# resnet-serving router: rendered by the Helm chart (templates/_router_config.tpl).
worker_processes {{ $r.workerProcesses }};
pid /tmp/nginx.pid;
error_log stderr warn;
# nginx waits this long for open requests on a graceful stop (SIGQUIT) or reload.
worker_shutdown_timeout {{ $timeout }}s;

events {
    worker_connections {{ $r.workerConnections }};
}

http {
    # The root filesystem is read-only: every temporary file under /tmp (an emptyDir).
    client_body_temp_path /tmp/nginx-client-body;
    proxy_temp_path /tmp/nginx-proxy;
    fastcgi_temp_path /tmp/nginx-fastcgi;
    uwsgi_temp_path /tmp/nginx-uwsgi;
    scgi_temp_path /tmp/nginx-scgi;
    server_tokens off;
    default_type application/octet-stream;

    # The largest body any route of the app accepts (a protocol call of SERVING_MAX_BATCH_FILES
    # base64 images): the app's own caps and 413 apply below it. Bodies are read whole before
    # they are passed on (up to 1 MiB in memory, the rest in /tmp), so a slow client never
    # holds an app worker, and a request can be retried.
    client_max_body_size {{ include "resnet-serving.largestBody" . }};
    client_body_buffer_size 1m;
    client_body_timeout 60s;
    keepalive_timeout 65s;  # HTTP/2 (gRPC) clients; the HTTP/1.1 server turns it off

    # The caller's request id when it is one the app would keep (app/calls/ids.py), else
    # nginx's own: sent to the app, which echoes it, and safe inside the router's JSON.
    map $http_x_request_id $rid {
        "~^[A-Za-z0-9._:-]{1,128}$" $http_x_request_id;
        default $request_id;
    }

    # 3 and 4: sticky by X-Client-Id, else random per request.
    map $http_x_client_id $split_key {
        ""      "request:$request_id";
        default "client:$http_x_client_id";
    }
    split_clients "$split_key" $split_track {
{{- if and $c.enabled (ge $percent 100.0) }}
        *       canary;
{{- else if and $c.enabled (gt $percent 0.0) }}
        {{ $percent }}% canary;
        *       stable;
{{- else }}
        *       stable;
{{- end }}
    }

    # 2: X-Model-Version pins a version by its label.
    map $http_x_model_version $header_track {
        ""      "";
        {{ $stableLabel | quote }} stable;
{{- if $c.enabled }}
        {{ $canaryLabel | quote }} canary;
{{- end }}
        default unknown;
    }

    # 1: the protocol's versioned routes name the version in the path.
    map $uri $path_label {
        "~^/v2/models/[^/]+/versions/(?<label>[A-Za-z0-9._-]{1,32})(/|$)" $label;
        "~^/v2/models/[^/]+/versions/" "(invalid)";
        default "";
    }
    map $path_label $path_track {
        ""      "";
        {{ $stableLabel | quote }} stable;
{{- if $c.enabled }}
        {{ $canaryLabel | quote }} canary;
{{- end }}
        default unknown_path;
    }

    map $path_track $pinned_track {
        ""      $header_track;
        default $path_track;
    }
    map $pinned_track $track {
        ""      $split_track;
        default $pinned_track;
    }

{{- if $r.accessLog }}

    log_format router escape=json '{"time":"$time_iso8601","request_id":"$rid",'
        '"method":"$request_method","uri":"$uri","protocol":"$server_protocol",'
        '"status":$status,"track":"$track","client_id":"$http_x_client_id",'
        '"model_version":"$upstream_http_x_model_version","upstream":"$upstream_addr",'
        '"upstream_status":"$upstream_status","request_time":$request_time,'
        '"upstream_response_time":"$upstream_response_time","body_bytes":$request_length}';
    access_log /dev/stdout router;
{{- else }}
    access_log off;
{{- end }}

    # One Service per version. A single Service address is never marked down (max_fails=0); a
    # failed connection is retried once (below) on the next server: the stable's address again
    # (nginx tries each server of an upstream once, hence the stable twice), or, for the
    # canary, the stable: a canary that cannot be reached at all (no ready pod, or being
    # removed) costs no request; X-Model-Version in the answer says who served it.
    upstream stable_http {
        server {{ $stable }}:{{ $http }} max_fails=0;
        server {{ $stable }}:{{ $http }} max_fails=0 backup;
        keepalive {{ $r.upstreamKeepalive }};
        keepalive_timeout {{ $r.upstreamKeepaliveTimeoutSeconds }}s;
        keepalive_time {{ $connectionLife }}s;
    }
    upstream canary_http {
{{- if $c.enabled }}
        server {{ $canary }}:{{ $http }} max_fails=0;
        server {{ $stable }}:{{ $http }} max_fails=0 backup;
{{- else }}
        server {{ $stable }}:{{ $http }} max_fails=0;
        server {{ $stable }}:{{ $http }} max_fails=0 backup;
{{- end }}
        keepalive {{ $r.upstreamKeepalive }};
        keepalive_timeout {{ $r.upstreamKeepaliveTimeoutSeconds }}s;
        keepalive_time {{ $connectionLife }}s;
    }
{{- if gt $grpc 0 }}
    upstream stable_grpc {
        server {{ $stable }}:{{ $grpc }} max_fails=0;
        server {{ $stable }}:{{ $grpc }} max_fails=0 backup;
        keepalive {{ $r.upstreamKeepalive }};
        keepalive_timeout {{ $r.upstreamKeepaliveTimeoutSeconds }}s;
        keepalive_time {{ $connectionLife }}s;
    }
    upstream canary_grpc {
{{- if $c.enabled }}
        server {{ $canary }}:{{ $grpc }} max_fails=0;
        server {{ $stable }}:{{ $grpc }} max_fails=0 backup;
{{- else }}
        server {{ $stable }}:{{ $grpc }} max_fails=0;
        server {{ $stable }}:{{ $grpc }} max_fails=0 backup;
{{- end }}
        keepalive {{ $r.upstreamKeepalive }};
        keepalive_timeout {{ $r.upstreamKeepaliveTimeoutSeconds }}s;
        keepalive_time {{ $connectionLife }}s;
    }
{{- end }}

    server {
        listen {{ $http }};
        # No client keep-alive: a reload or a graceful stop closes the connections that are
        # idle at that moment, and a client sending its next request on one just then gets no
        # answer. nginx 1.27.4's keepalive_min_timeout would narrow that; Debian's 1.22, which
        # the local cluster runs, has none. (gRPC's HTTP/2 gets a clean GOAWAY instead.)
        keepalive_timeout 0;

        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $host;
        proxy_set_header X-Request-ID $rid;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_connect_timeout 3s;
        # The longest deadline a client may ask for, plus a margin: the app's own 503/504
        # always come first, with their bodies and Retry-After.
        proxy_send_timeout {{ $timeout }}s;
        proxy_read_timeout {{ $timeout }}s;
        # Only a connection that failed (refused, reset, or closed by the app before it
        # answered) is retried, once, POSTs included: a prediction has no side effect. Never a
        # timeout, and never an answer: the app's 4xx/5xx pass through as they are.
        proxy_next_upstream error non_idempotent;
        proxy_next_upstream_tries 2;

        # The router's own refusals, in the app's error format.
        error_page 413 = @too_large;
        error_page 502 503 = @unavailable;
        error_page 504 = @timeout;

        if ($track = unknown) {
            rewrite ^ /.router/unknown-version last;
        }
        if ($track = unknown_path) {
            rewrite ^ /.router/unknown-path-version last;
        }

        location / {
            proxy_pass http://${track}_http;
        }

        location = /.router/unknown-version {
            internal;
            default_type application/json;
            add_header X-Request-ID $rid always;
            return 400 '{"error":{"code":"unknown_model_version","message":"X-Model-Version names no version of this release; it serves {{ $known }}"},"request_id":"$rid"}\n';
        }
        location = /.router/unknown-path-version {
            internal;
            default_type application/json;
            add_header X-Request-ID $rid always;
            return 404 '{"error":"model version \'$path_label\' is not served; this release serves {{ $known }}","code":"unknown_model_version"}\n';
        }
        location @too_large {
            default_type application/json;
            add_header X-Request-ID $rid always;
            return 413 '{"error":{"code":"payload_too_large","message":"request body larger than {{ include "resnet-serving.largestBody" . }} bytes, the most any route accepts"},"request_id":"$rid"}\n';
        }
        location @unavailable {
            default_type application/json;
            add_header X-Request-ID $rid always;
            add_header Retry-After 1 always;
            return 503 '{"error":{"code":"upstream_unavailable","message":"no server of version $track could be reached; retry"},"request_id":"$rid"}\n';
        }
        location @timeout {
            default_type application/json;
            add_header X-Request-ID $rid always;
            return 504 '{"error":{"code":"upstream_timeout","message":"the server did not answer within {{ $timeout }} s"},"request_id":"$rid"}\n';
        }
    }
{{- if gt $grpc 0 }}

    # The Open Inference Protocol over gRPC (HTTP/2 without TLS), split the same way: gRPC
    # metadata are HTTP/2 headers, so x-client-id and x-model-version work as above.
    server {
        listen {{ $grpc }} http2;

        grpc_set_header X-Request-ID $rid;
        grpc_connect_timeout 3s;
        grpc_send_timeout {{ $timeout }}s;
        grpc_read_timeout {{ $timeout }}s;
        grpc_next_upstream error non_idempotent;
        grpc_next_upstream_tries 2;

        error_page 413 = @grpc_too_large;
        error_page 502 503 = @grpc_unavailable;
        error_page 504 = @grpc_timeout;

        if ($track ~ ^unknown) {
            rewrite ^ /.router/grpc-unknown-version last;
        }

        location / {
            grpc_pass grpc://${track}_grpc;
        }

        # A refusal as a gRPC status (HTTP 200 with grpc-status, "trailers-only").
        location = /.router/grpc-unknown-version {
            internal;
            default_type application/grpc;
            add_header grpc-status 3 always;
            add_header grpc-message "x-model-version names no version of this release; it serves {{ $known }}" always;
            return 204;
        }
        location @grpc_too_large {
            default_type application/grpc;
            add_header grpc-status 8 always;
            add_header grpc-message "message larger than the router accepts" always;
            return 204;
        }
        location @grpc_unavailable {
            default_type application/grpc;
            add_header grpc-status 14 always;
            add_header grpc-message "no server of version $track could be reached" always;
            return 204;
        }
        location @grpc_timeout {
            default_type application/grpc;
            add_header grpc-status 4 always;
            add_header grpc-message "the server did not answer in time" always;
            return 204;
        }
    }
{{- end }}

    # Probes and nginx's connection counters.
    server {
        listen {{ $r.statusPort }};
        access_log off;
        location = /healthz {
            default_type text/plain;
            return 200 "ok\n";
        }
        location = /stub_status {
            stub_status;
        }
        location / {
            return 404;
        }
    }
}
{{- end }}
