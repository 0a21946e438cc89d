# kongtx: one node per container.  Configure it with KONG_* variables, e.g.
#   docker run -e KONG_ADMIN_LISTEN=0.0.0.0:8001 -p 127.0.0.1:8001:8001 -p 8000:8000 kongtx
# (the Admin API listens on 127.0.0.1 by default, i.e. not outside the container:
# publish it deliberately, and only where you trust the network; docs/configuration.md).
# Build stage: `make install` into /opt/kongtx/.venv, exactly as on a developer's
# machine: the runtime dependencies and mypy (pinned) first, then the package with
# its proxy hot path compiled by mypyc (setup.py).  gcc and the C library headers are
# needed here only (the python image has Python.h); the final image gets the venv.
FROM python:3.11-slim AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev make \
    && rm -rf /var/lib/apt/lists/*

# Only what the package is built from: a developer's .venv, .git, build/ or prefix
# must not end up in the image.
WORKDIR /usr/src/kongtx
COPY setup.py setup.cfg pyproject.toml README.md Makefile ./
COPY kongtx ./kongtx
COPY twisted ./twisted

# Then what only the build needed (mypy, its plugin and the stubs) leaves the venv.
RUN PIP_NO_CACHE_DIR=1 make install PYTHON=python3 VENV=/opt/kongtx/.venv \
    && /opt/kongtx/.venv/bin/pip uninstall -y -q mypy mypy-zope types-pyOpenSSL types-PyYAML \
    && cd / \
    && /opt/kongtx/.venv/bin/python -c "from kongtx.build_info import compiled_modules, HOT_PATH; assert compiled_modules() == list(HOT_PATH), 'the hot path did not compile'"

FROM python:3.11-slim

# The same interpreter path as the build stage's, so the venv works as copied.
COPY --from=build /opt/kongtx/.venv /opt/kongtx/.venv
COPY docker-entrypoint.sh /usr/src/docker-entrypoint.sh

# The twisted plugin cache, generated here because site-packages is read-only to
# `kong`; then prove, from outside any source tree, that the installed package is
# complete (the `kong` twistd plugin, the migration scripts, the compiled hot path).
RUN install -m 0755 /usr/src/docker-entrypoint.sh /docker-entrypoint.sh \
    && rm /usr/src/docker-entrypoint.sh \
    && cd / \
    && /opt/kongtx/.venv/bin/python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))" \
    && /opt/kongtx/.venv/bin/twistd kong --help > /dev/null \
    && /opt/kongtx/.venv/bin/python -c "from kongtx.store.migrations import load_migrations; assert load_migrations('sqlite', ['core'])" \
    && /opt/kongtx/.venv/bin/python -c "from kongtx.build_info import describe; print(describe())" \
    && useradd --system --home-dir /usr/local/kong --shell /usr/sbin/nologin kong \
    && mkdir -p /usr/local/kong \
    && chown kong:kong /usr/local/kong

ENV PATH=/opt/kongtx/.venv/bin:$PATH \
    KONG_PREFIX=/usr/local/kong

USER kong
WORKDIR /usr/local/kong
VOLUME ["/usr/local/kong"]

# proxy, proxy TLS, Admin API, cluster gossip (TCP and UDP)
EXPOSE 8000 8443 8001 7946 7946/udp

# `kong quit` semantics on `docker stop`: SIGQUIT drains in-flight requests first.
STOPSIGNAL SIGQUIT

ENTRYPOINT ["/docker-entrypoint.sh"]
CMD ["kong", "start", "--foreground"]
