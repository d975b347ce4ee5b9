# zeo-rs supervisor image: zeo-supervisor (and zeoctl for its health check) on an empty base.
# Built by scripts/build-images; nothing is pulled.
FROM scratch
COPY rootfs/ /
# /data, owned by the runtime user: a volume mounted there for --lease-backend file starts writable.
COPY --chown=65532:65532 data/ /data/
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="zeo-rs supervisor" \
      org.opencontainers.image.description="Failover supervisor for zeo-rs: lease, promotion, service address, fencing" \
      org.opencontainers.image.source="https://github.com/zeo-rs/zeo-rs" \
      org.opencontainers.image.licenses="ZPL-2.1" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
ENV ZEO_SUPERVISOR_LOG_FORMAT=json
USER 65532:65532
EXPOSE 8110
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s CMD ["/usr/local/bin/zeoctl", "health", "http://127.0.0.1:8110/livez"]
ENTRYPOINT ["/usr/local/bin/zeo-supervisor"]
