# zeo-rs server image: zeo-server and zeoctl on an empty base. Built by scripts/build-images from a
# root filesystem it assembles (the release binaries, the C libraries they link, /etc/passwd):
# nothing is pulled. Users with a registry can use docker/Dockerfile instead (same binaries).
FROM scratch
COPY rootfs/ /
COPY --chown=65532:65532 data/ /data/
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="zeo-rs server" \
      org.opencontainers.image.description="ZEO storage server (ZODB FileStorage over ZEO 5) with replication" \
      org.opencontainers.image.source="https://github.com/zeo-rs/zeo-rs" \
      org.opencontainers.image.licenses="ZPL-2.1" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
ENV ZEO_PATH=/data/Data.fs ZEO_BLOB_DIR=/data/blobs ZEO_LISTEN=0.0.0.0:8100 ZEO_ADMIN=0.0.0.0:8101 \
    ZEO_LOG_FORMAT=json
USER 65532:65532
VOLUME ["/data"]
EXPOSE 8100 8101 8102
# zeo-server handles SIGTERM itself (drains commits, fsyncs, saves the index) and runs as PID 1.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s CMD ["/usr/local/bin/zeoctl", "health", "http://127.0.0.1:8101/livez"]
ENTRYPOINT ["/usr/local/bin/zeo-server"]
