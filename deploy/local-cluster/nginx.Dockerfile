# The local cluster's stand-in for the official nginx image that the chart's router uses by
# default (scripts/cluster.sh; no registry is reachable here): Debian bookworm's nginx package
# (1.22) on the local debootstrap base, local/debian:bookworm-slim. Its `nginx` user is UID/GID
# 101, as in the official image, so the chart's router security context (runAsUser/runAsGroup
# 101) fits both. The chart runs `nginx -c <its config>` itself: no entrypoint here either.
FROM local/debian:bookworm-slim
# A policy-rc.d that refuses, so the package's postinst does not start the service inside the
# build; the package's default site goes, and its log files are the container's stdout and
# stderr (nginx opens the built-in error log before it reads the chart's config, which writes
# only under /tmp), as in the official image.
# hadolint ignore=DL3008
RUN groupadd --system --gid 101 nginx \
    && useradd --system --uid 101 --gid nginx --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin nginx \
    && printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d \
    && chmod 755 /usr/sbin/policy-rc.d \
    && apt-get update \
    && apt-get install -y --no-install-recommends nginx \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d /etc/nginx/sites-enabled/* \
    && ln -sf /dev/stdout /var/log/nginx/access.log \
    && ln -sf /dev/stderr /var/log/nginx/error.log \
    && nginx -V
USER 101:101
EXPOSE 8000 8001 8081
# nginx's graceful stop, as in the official image.
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
