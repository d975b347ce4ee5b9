# zeo-rs app image: zeo-app (the demo web application whose state lives in zeo-rs) and zeo-load.
# Built by scripts/build-images; nothing is pulled.
FROM scratch
COPY rootfs/ /
COPY --chown=65532:65532 data/ /data/
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="zeo-rs app" \
      org.opencontainers.image.description="zeo-app (wiki, counters, key-value over zeo-rs) and the zeo-load generator" \
      org.opencontainers.image.source="https://github.com/zeo-rs/zeo-rs" \
      org.opencontainers.image.licenses="ZPL-2.1" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
ENV ZEO_APP_LISTEN=0.0.0.0:8080
USER 65532:65532
EXPOSE 8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s CMD ["/usr/local/bin/zeoctl", "health", "http://127.0.0.1:8080/livez"]
ENTRYPOINT ["/usr/local/bin/zeo-app"]
