# polyai-loadtest as an image: `loadtest` on the PATH, the Locust user and its data inside
# the installed package (no checkout needed at run time). Not built in CI.
#
#   docker build -t polyai-loadtest .
#   docker run --rm polyai-loadtest --version
#   docker run --rm -v "$PWD/reports:/reports" polyai-loadtest run --out /reports
#
# Distributed: examples/docker-compose.yml and examples/k8s/ (a master and workers, no shared
# volume: the workers' rows reach the master over Locust's message channel).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLCONFIGDIR=/tmp/matplotlib

WORKDIR /src
COPY pyproject.toml README.md ./
COPY loadtest ./loadtest
COPY analysis ./analysis
RUN pip install . && rm -rf /src

# Not root; /reports is where run folders go when a volume is mounted there.
RUN useradd --create-home --uid 10001 loadtest && mkdir /reports && chown loadtest /reports
USER 10001
WORKDIR /home/loadtest

# 5557: a master's port for workers (loadtest run --workers N); 8089: loadtest ui --web-port.
EXPOSE 5557 8089
ENTRYPOINT ["loadtest"]
CMD ["--help"]
