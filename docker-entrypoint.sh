#!/bin/sh
# kongtx container entrypoint.
#
# `docker run kongtx` runs `kong start --foreground`; `docker run kongtx --vv` or
# `docker run kongtx -h` run `kong <args>`; any other command runs as given.
# Configuration comes from KONG_* variables only (KONG_PG_HOST, KONG_DATABASE...),
# exactly as `kong` reads them; nothing else in the environment is looked at.
#
# Before a kong command we make sure the prefix exists and drop a pid file left by a
# previous container: in a new container that pid names some unrelated process, and
# twistd would refuse to start ("Another twistd server is running").
# `exec` replaces this shell, so `docker stop` (SIGTERM) and `docker kill -s QUIT`
# reach the node itself.
set -eu

if [ "$#" -gt 0 ] && [ "${1#-}" != "$1" ]; then
    set -- kong "$@"
fi

if [ "$#" -gt 0 ] && [ "$1" = "kong" ]; then
    KONG_PREFIX="${KONG_PREFIX:-/usr/local/kong}"
    export KONG_PREFIX
    mkdir -p "$KONG_PREFIX" "$KONG_PREFIX/logs" "$KONG_PREFIX/pids"
    rm -f "$KONG_PREFIX/pids/kong.pid"
fi

exec "$@"
