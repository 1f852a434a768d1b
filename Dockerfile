# syntax=docker/dockerfile:1
# Build in one stage, install into a clean virtualenv, ship only that.
# Dependencies come from requirements.lock (exact versions and hashes; `make lock` rewrites it),
# so an image built today and one built next month hold the same packages.
FROM python:3.12-slim AS build
WORKDIR /src
COPY requirements.lock ./
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY proxy ./proxy
COPY prefetch ./prefetch
# The project itself: everything it needs (setuptools too) is in the venv from the lock already.
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps --no-build-isolation .

FROM python:3.12-slim
RUN groupadd --system --gid 10001 proxy \
 && useradd --system --uid 10001 --gid proxy --home-dir /nonexistent --shell /usr/sbin/nologin proxy \
 && mkdir -p /var/cache/pypi-proxy \
 && chown 10001:10001 /var/cache/pypi-proxy
COPY --from=build /opt/venv /opt/venv
COPY config.yaml /etc/pypi-proxy/config.yaml
# Settings by environment so that `serve` and `health` read the same ones; the port is the
# config file's (8080) unless PYPI_PROXY_PORT or the mounted config says otherwise.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYPI_PROXY_CONFIG=/etc/pypi-proxy/config.yaml \
    PYPI_PROXY_HOST=0.0.0.0 \
    PYPI_PROXY_CACHE_DIR=/var/cache/pypi-proxy
# Numeric, so a runtime that checks runAsNonRoot can tell without reading /etc/passwd.
USER 10001:10001
VOLUME ["/var/cache/pypi-proxy"]
EXPOSE 8080
# Reads the same settings as serve: follows PYPI_PROXY_PORT, the config file and TLS.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["pypi-proxy", "health", "--timeout", "4"]
ENTRYPOINT ["pypi-proxy"]
CMD ["serve"]
