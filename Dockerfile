# Clarion image: the `clarion` command with everything needed to run a worker
# (`clarion worker`) or apply the database migrations (`clarion db upgrade`).
#
#   docker build -t clarion .
#   docker run --rm -e CLARION_TEMPORAL_ADDRESS=temporal.example.com:7233 clarion
#
# Configuration comes from CLARION_* environment variables (docs/configuration.md).

# ---- build: install Clarion and its dependencies into a virtualenv ----
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/clarion

WORKDIR /src
# Only what the package build needs; keeps local virtualenvs, caches and
# .clarion/ state out of the image.
COPY pyproject.toml README* LICENSE* ./
COPY clarion ./clarion
COPY workflows ./workflows
COPY activities ./activities
COPY workers ./workers
COPY starters ./starters
RUN /opt/clarion/bin/pip install .

# ---- runtime ----
FROM python:3.11-slim

ENV PATH=/opt/clarion/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CLARION_HOME=/var/lib/clarion

RUN groupadd --system --gid 10001 clarion \
    && useradd --system --uid 10001 --gid clarion \
        --home-dir /var/lib/clarion --create-home --shell /usr/sbin/nologin clarion

COPY --from=build /opt/clarion /opt/clarion

USER clarion
WORKDIR /var/lib/clarion

# Exec form: `clarion` receives SIGTERM directly on `docker stop`.
CMD ["clarion", "worker"]
