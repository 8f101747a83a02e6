# One image for the service (API + dashboard) and the workers.
# TORCH_INDEX_URL: empty takes PyPI's torch (CUDA on x86_64); for a CPU-only image (GBs smaller):
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .
# EXTRAS: the package's extras; `postgres` brings the driver for HPS_DATABASE_URL=postgresql+psycopg://
FROM python:3.11-slim
ARG TORCH_INDEX_URL=""
ARG EXTRAS="worker,postgres"
WORKDIR /app
# torch first, from its index, so that the package's plain torch>=2.4 is already satisfied.
RUN pip install --no-cache-dir "torch>=2.4" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
COPY pyproject.toml README.md ./
COPY api_schemas api_schemas
COPY service service
COPY worker worker
COPY hps hps
RUN pip install --no-cache-dir ".[${EXTRAS}]"
# A fixed uid: Kubernetes pods run as it (deploy/kubernetes: runAsUser 1000, runAsNonRoot).
RUN useradd --create-home --uid 1000 hps && mkdir /data && chown hps /data
USER 1000
ENV HPS_DATABASE_URL=sqlite:////data/hps.db
EXPOSE 8000
CMD ["hps", "serve", "--host", "0.0.0.0", "--port", "8000"]
