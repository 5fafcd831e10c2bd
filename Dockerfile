# exauth: one image for the Slack bot, the RQ worker and the cron scheduler.
# The command picks the role: `bot` (default), `worker`, `cron`, or any other exauth command.
#
# Build stage: Kerberos for pypsrp (pyspnego[kerberos] -> gssapi + krb5) compiles C
# extensions against MIT Kerberos, so gcc and libkrb5-dev are needed here and only here.
FROM python:3.11-slim AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev libkrb5-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY workers ./workers
COPY config ./config
COPY lab ./lab
# Wheels for exauth and every dependency, including the Kerberos extra.
RUN pip wheel --wheel-dir /wheels ".[kerberos]"


# Runtime stage: the Kerberos runtime libraries and kinit/klist (krb5-user) for diagnosis.
# Mount the realm's krb5.conf at /etc/krb5.conf (and a CA bundle for `ca_bundle`); see the
# README's "Connecting to Exchange".
FROM python:3.11-slim

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    EXAUTH_CONFIG=/etc/exauth/exauth.toml \
    MPLCONFIGDIR=/tmp/matplotlib
# MPLCONFIGDIR: matplotlib (the timeline PNG) keeps its font cache there; the container's
# root is read-only and /tmp is its tmpfs (docker-compose.yml).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        krb5-user libkrb5-3 libgssapi-krb5-2 ca-certificates \
 && rm -rf /var/lib/apt/lists/*

COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links=/wheels "exauth[kerberos]" && rm -rf /wheels

# Never run as root: the bot only needs outbound HTTPS (and one port in HTTP mode).
RUN groupadd --system --gid 10001 exauth \
 && useradd --system --uid 10001 --gid exauth --home-dir /home/exauth --create-home \
        --shell /usr/sbin/nologin exauth
USER exauth
WORKDIR /home/exauth

# HTTP mode only (`exauth bot --http --port 3000`, also GET /metrics); Socket Mode needs no
# inbound port (Prometheus scrapes `exauth metrics` on 9464 instead).
EXPOSE 3000 9464

ENTRYPOINT ["exauth"]
CMD ["bot"]
