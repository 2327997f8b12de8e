# infergate, CPU image: the scoring server by default; the same image runs the router
# (`route ...`) and the AzureML importer (`render-k8s ...`).
#   docker build -t infergate:cpu .
#   docker run --rm -p 8001:8001 -v "$PWD/models:/models:ro" infergate:cpu
# See docs/deploy.md.

# --- build: a virtual environment with infergate and its dependencies -------------------
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY scoring/ scoring/
COPY server/ server/
COPY router/ router/
RUN python -m venv /opt/infergate \
    && /opt/infergate/bin/pip install --no-cache-dir /src

# --- runtime -----------------------------------------------------------------------------
FROM python:3.11-slim-bookworm
COPY --from=build /opt/infergate /opt/infergate
# A fixed numeric uid so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin infergate \
    && mkdir -p /models /var/lib/infergate \
    && chown infergate:infergate /var/lib/infergate
ENV PATH=/opt/infergate/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    INFERGATE_HEALTHCHECK_URL=http://127.0.0.1:8001/v2/health/ready
# The model repository is mounted here: /models/<model>/<version>/model.onnx.
VOLUME ["/models"]
WORKDIR /var/lib/infergate
USER 10001:10001
# 8001 scoring, 8000 router, 8002 router admin + metrics.
EXPOSE 8001 8000 8002
# Readiness, not liveness: a draining server (after SIGTERM) answers 503 and turns unhealthy.
# Python's urllib raises on any non-2xx status, so no curl is needed in the image. Point
# INFERGATE_HEALTHCHECK_URL at http://127.0.0.1:8002/... when the container runs the router.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['INFERGATE_HEALTHCHECK_URL'], timeout=2)"]
# Exec form: the server is PID 1 and receives SIGTERM itself (graceful drain).
ENTRYPOINT ["infergate"]
CMD ["serve", "--model-repository", "/models", "--host", "0.0.0.0", "--port", "8001"]
