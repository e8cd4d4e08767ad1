# syntax=docker/dockerfile:1
# The driftline service. From the repository root:
#   docker build -t driftline:0.1.0 .
#   docker run -v $PWD/driftline.yaml:/etc/driftline/driftline.yaml:ro -p 9108:9108 driftline:0.1.0
# The configuration is mounted, never baked in (deploy/docker-compose.yml, deploy/kubernetes/).

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# A virtualenv at the same path in both stages, so it can be copied as is.
RUN python -m venv /opt/driftline
WORKDIR /src
COPY pyproject.toml README.md ./
COPY monitor/ monitor/
COPY consumers/ consumers/
COPY alerts/ alerts/
RUN /opt/driftline/bin/pip install .

FROM python:3.11-slim
ENV PATH=/opt/driftline/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 driftline \
    && useradd --system --uid 10001 --gid driftline --home-dir /var/lib/driftline \
       --shell /usr/sbin/nologin driftline \
    && mkdir -p /var/lib/driftline/state /etc/driftline \
    && chown -R driftline:driftline /var/lib/driftline
COPY --from=build /opt/driftline /opt/driftline
USER 10001:10001
# state.dir: ./state resolves here; mount a volume on /var/lib/driftline/state to keep it
WORKDIR /var/lib/driftline
EXPOSE 9108
# /healthz answers while the process serves HTTP; /readyz (used by Kubernetes) also needs
# the consumer to own partitions. Port 9108 is http.port's default.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9108/healthz', timeout=2)"]
ENTRYPOINT ["driftline"]
CMD ["run", "--config", "/etc/driftline/driftline.yaml"]
