# Switchboard's image: slim Python, installed by deploy/install.sh (the step CI runs too), run as a
# non-root user. Images can't be built on the development machines (no registry access but PyPI):
# docs/deploy.md. Build: docker build -t switchboard .
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1

RUN useradd --system --uid 10001 --user-group --create-home --home-dir /srv/switchboard switchboard

WORKDIR /src
COPY pyproject.toml README.md ./
COPY switchboard ./switchboard
COPY deploy/install.sh ./deploy/install.sh
RUN sh deploy/install.sh /opt/switchboard && rm -rf /src

ENV PATH=/opt/switchboard/bin:$PATH HOST=0.0.0.0 PORT=5050
USER switchboard
WORKDIR /srv/switchboard
EXPOSE 5050
# SIGTERM drains: no new calls, active ones get drain_timeout_s, then a goodbye (docs/deploy.md)
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:5050/healthz', timeout=2)"
ENTRYPOINT ["switchboard", "serve"]
