# kongtx: one node per container.  Configure it with KONG_* variables, e.g.
#   docker run -e KONG_ADMIN_LISTEN=0.0.0.0:8001 -p 127.0.0.1:8001:8001 -p 8000:8000 kongtx
# (the Admin API listens on 127.0.0.1 by default, i.e. not outside the container:
# publish it deliberately, and only where you trust the network; docs/configuration.md).
FROM python:3.11-slim

# Only what the package is built from: a developer's .venv, .git or prefix must not
# end up in the image.
WORKDIR /usr/src/kongtx
COPY setup.cfg pyproject.toml README.md docker-entrypoint.sh ./
COPY kongtx ./kongtx
COPY twisted ./twisted

# The same steps as `make install`: a venv, a plain (non-editable) install, then the
# twisted plugin cache, generated here because site-packages is read-only to `kong`.
# Then prove, from outside the source tree, that the installed package is complete
# (the `kong` twistd plugin and the migration scripts), and drop the sources.
RUN python3 -m venv /opt/kongtx/.venv \
    && /opt/kongtx/.venv/bin/pip install --no-cache-dir -q -U pip setuptools wheel \
    && /opt/kongtx/.venv/bin/pip install --no-cache-dir -q . \
    && install -m 0755 docker-entrypoint.sh /docker-entrypoint.sh \
    && cd / \
    && /opt/kongtx/.venv/bin/python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))" \
    && /opt/kongtx/.venv/bin/twistd kong --help > /dev/null \
    && /opt/kongtx/.venv/bin/python -c "from kongtx.store.migrations import load_migrations; assert load_migrations('sqlite', ['core'])" \
    && rm -rf /usr/src/kongtx \
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
