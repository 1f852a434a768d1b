# syntax=docker/dockerfile:1
# Build a wheel in one stage, install it into a clean virtualenv, ship only that.
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proxy ./proxy
COPY prefetch ./prefetch
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/venv/bin/pip install --no-cache-dir .

FROM python:3.12-slim
RUN groupadd --system --gid 10001 proxy \
 && useradd --system --uid 10001 --gid proxy --home-dir /nonexistent --shell /usr/sbin/nologin proxy \
 && mkdir -p /var/cache/pypi-proxy \
 && chown proxy:proxy /var/cache/pypi-proxy
COPY --from=build /opt/venv /opt/venv
COPY config.yaml /etc/pypi-proxy/config.yaml
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYPI_PROXY_HOST=0.0.0.0 \
    PYPI_PROXY_PORT=8080 \
    PYPI_PROXY_CACHE_DIR=/var/cache/pypi-proxy
USER proxy
VOLUME ["/var/cache/pypi-proxy"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=4).status != 200)"]
ENTRYPOINT ["pypi-proxy"]
CMD ["serve", "--config", "/etc/pypi-proxy/config.yaml"]
