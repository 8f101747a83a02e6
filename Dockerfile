# One image for the service and the workers.
# TORCH: the default takes PyPI's build (CUDA on x86_64); for a CPU-only image use e.g.
#   docker build --build-arg TORCH="torch --index-url https://download.pytorch.org/whl/cpu" .
FROM python:3.11-slim
ARG TORCH="torch>=2.4"
WORKDIR /app
RUN pip install --no-cache-dir ${TORCH}
COPY pyproject.toml README.md ./
COPY api_schemas api_schemas
COPY service service
COPY worker worker
COPY hps hps
RUN pip install --no-cache-dir ".[worker]"
RUN useradd --create-home hps && mkdir /data && chown hps /data
USER hps
ENV HPS_DATABASE_URL=sqlite:////data/hps.db
EXPOSE 8000
CMD ["hps", "serve", "--host", "0.0.0.0", "--port", "8000"]
