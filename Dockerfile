# The guywire image: the operator (`guywire run`), the node agent (`guywire node-agent`) and the CLI.
#   docker build -t guywire:dev .
#   docker run --rm guywire:dev check --help
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Installed as the README installs it (pip install .), from a copy of the sources that is then removed.
COPY pyproject.toml README.md /src/
COPY operator/ /src/operator/
RUN pip install /src && rm -rf /src

# A fixed non-root user; the chart runs as 10001:10001 with a read-only root filesystem.
RUN groupadd --system --gid 10001 guywire \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin guywire
USER 10001:10001
WORKDIR /tmp

EXPOSE 8080 8081 9443
ENTRYPOINT ["guywire"]
CMD ["--help"]
