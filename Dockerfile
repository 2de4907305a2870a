# DictaMesh Workbench image for server mode (docker-compose.yml): `dictamesh serve` by default,
# `dictamesh consume` for the consumer workers.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# CPU-only PyTorch wheels: the default index serves CUDA builds, gigabytes a CPU container never uses.
ARG PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu

WORKDIR /app

# Only what the distribution is built from, so a local .env, .venv or DICTAMESH_HOME never ends
# up in an image layer.
COPY pyproject.toml README.md ./
COPY workbench ./workbench
COPY connectors ./connectors
COPY dashboards ./dashboards
COPY notebooks ./notebooks
COPY migrations ./migrations

RUN pip install ".[all]"

RUN useradd --system --uid 10001 --user-group --no-create-home dictamesh \
    && mkdir -p /var/lib/dictamesh \
    && chown dictamesh:dictamesh /var/lib/dictamesh

USER dictamesh
ENV DICTAMESH_HOME=/var/lib/dictamesh
VOLUME ["/var/lib/dictamesh"]
EXPOSE 5006

CMD ["dictamesh", "serve", "--host", "0.0.0.0", "--port", "5006"]
