# rtserver: multi-stage build, non-root, Python 3.13 slim.
FROM python:3.13-slim AS build
WORKDIR /src
COPY pyproject.toml constraints.txt ./
COPY rtserver ./rtserver
COPY actors ./actors
COPY protocol ./protocol
# rtserver/web/docs links the protocol's documents from docs/: the wheel takes their text.
COPY docs ./docs
RUN python -m venv /opt/rtserver \
 && /opt/rtserver/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/rtserver/bin/pip install --no-cache-dir -c constraints.txt .

FROM python:3.13-slim
RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin rtserver
COPY --from=build /opt/rtserver /opt/rtserver
COPY config/rtserver.toml /etc/rtserver/rtserver.toml
ENV PATH=/opt/rtserver/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    RTSERVER_CONFIG=/etc/rtserver/rtserver.toml \
    RTSERVER_HOST=0.0.0.0 \
    RTSERVER_PORT=8080
USER rtserver
EXPOSE 8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=2s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"
ENTRYPOINT ["rtserver", "serve"]
