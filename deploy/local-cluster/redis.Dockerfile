# The local cluster's stand-in for the official redis image (scripts/cluster.sh; no registry is
# reachable here): Debian bookworm's redis-server package (Redis 7.0) on the local debootstrap
# base, local/debian:bookworm-slim. Its `redis` user is UID/GID 999, as in the official image,
# so the chart's cache.redis security context (runAsUser/runAsGroup/fsGroup 999) fits both; the
# chart starts it the same way (sh -c: a config file in /tmp with the password, then
# redis-server with that file and its flags). /data is Redis' working directory.
FROM local/debian:bookworm-slim
# The user first, with the official image's numbers, so the package's postinst finds it; a
# policy-rc.d that refuses, so the postinst does not start the service inside the build.
# hadolint ignore=DL3008
RUN groupadd --system --gid 999 redis \
    && useradd --system --uid 999 --gid redis --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin redis \
    && printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d \
    && chmod 755 /usr/sbin/policy-rc.d \
    && apt-get update \
    && apt-get install -y --no-install-recommends redis-server \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d \
    && mkdir /data \
    && chown redis:redis /data \
    && redis-server --version \
    && redis-cli --version
WORKDIR /data
USER 999:999
EXPOSE 6379
CMD ["redis-server", "--save", "", "--appendonly", "no"]
