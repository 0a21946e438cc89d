# -*- test-case-name: tests.unit.test_config -*-
"""Where a :class:`~kongtx.config.Config`'s values come from: kong.conf, ``KONG_*``, ``-p``.

Resolves defaults < the file (``-c``, else the first existing of :data:`DEFAULT_PATHS`) <
``KONG_<PROPERTY>`` < ``-p`` (SPEC §5.1), then parses every property and checks the rules
between them, raising one :class:`~kongtx.config.ConfigError` with every problem found.
The property table and :class:`~kongtx.config.Config` are :mod:`kongtx.config`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from kongtx.config import MASK, PROPERTIES, SENSITIVE, Config, ConfigError, parse_value
from kongtx.config_values import Invalid
from kongtx.log import logger

#: Still kongtx.config: the namespace `kong ... --vv` copies (cli/output.py) and logs show.
log = logger("kongtx.config")

#: Where Kong looks for a configuration file when ``-c`` is not given (SPEC §5.1).
DEFAULT_PATHS: tuple[str, ...] = ("/etc/kong.conf", "/etc/kong/kong.conf")


def _strip_comment(value: str) -> str:
    """Cut a trailing ``# comment``; ``\\#`` stands for a literal ``#``."""
    out = []
    i = 0
    while i < len(value):
        char = value[i]
        if char == "\\" and value[i + 1 : i + 2] == "#":
            out.append("#")
            i += 2
            continue
        if char == "#":
            break
        out.append(char)
        i += 1
    return "".join(out)


def parse_conf(text: str, source: str = "<string>") -> dict[str, str]:
    """``key = value`` lines -> raw values (known keys only, comments cut, values trimmed).

    Lines that are not ``key = value`` and unknown keys are dropped (logged at
    debug), never fatal: Kong 0.9 silently ignored them too.
    """
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, sep, raw = stripped.partition("=")
        key = key.strip()
        if not sep or not key:
            log.debug(
                "{source}:{number}: not a 'key = value' line, ignored", source=source, number=number
            )
            continue
        if key not in PROPERTIES:
            log.debug("{source}: unknown property {key!r} ignored", source=source, key=key)
            continue
        values[key] = _strip_comment(raw).strip()
    return values


def _read_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return f.read()
    except OSError as e:
        raise ConfigError([f"could not read {path}: {e.strerror or e}"]) from e


def find_conf_path(conf_path: str | None) -> str | None:
    """The file to read: ``conf_path`` (must exist) or the first of :data:`DEFAULT_PATHS`."""
    if conf_path is not None:
        if not os.path.exists(conf_path):
            raise ConfigError([f"no file at: {conf_path}"])
        return conf_path
    for candidate in DEFAULT_PATHS:
        if os.path.isfile(candidate):
            return candidate
        log.debug("no config file found at {path}", path=candidate)
    return None


def load_config(
    conf_path: str | None = None,
    env: Mapping[str, str] = os.environ,
    prefix: str | None = None,
) -> Config:
    """Resolve defaults < file < ``KONG_*`` env < ``prefix``, validate, and return a Config.

    Raises:
        ConfigError: with every problem found (one line each, naming the property).
    """
    path = find_conf_path(conf_path)
    raw: dict[str, str] = {}
    if path is not None:
        log.debug("reading config file at {path}", path=path)
        raw.update(parse_conf(_read_file(path), path))
    for key in PROPERTIES:
        env_value = env.get(f"KONG_{key.upper()}")
        if env_value is not None:
            log.debug(
                "KONG_{name} ENV found with {value!r}",
                name=key.upper(),
                value=MASK if key in SENSITIVE else env_value,
            )
            raw[key] = env_value.strip()
    if prefix is not None:
        raw["prefix"] = prefix.strip()
    return _build(raw)


def _build(raw: Mapping[str, str]) -> Config:
    errors: list[str] = []
    values: dict[str, Any] = {}
    for key in PROPERTIES:
        text = raw.get(key, "")
        if "\n" in text or "\r" in text:
            errors.append(f"{key} must not contain a line break")
            continue
        try:
            values[key] = parse_value(key, text)
        except Invalid as e:
            errors.append(str(e))
    errors.extend(_cross_checks(values))
    if errors:
        raise ConfigError(errors)
    return Config(**values)


def _cross_checks(values: Mapping[str, Any]) -> list[str]:
    """Rules between properties (SPEC §5.2); properties that failed to parse are skipped."""
    errors: list[str] = []
    if values.get("ssl"):
        cert, key = values.get("ssl_cert"), values.get("ssl_cert_key")
        if "ssl_cert" in values and "ssl_cert_key" in values:
            if cert and not key:
                errors.append("ssl_cert_key must be specified")
            elif key and not cert:
                errors.append("ssl_cert must be specified")
        if cert and not os.path.exists(cert):
            errors.append(f"ssl_cert: no such file at {cert}")
        if key and not os.path.exists(key):
            errors.append(f"ssl_cert_key: no such file at {key}")
    if "dnsmasq" in values and "dns_resolver" in values:
        if values["dns_resolver"] and values["dnsmasq"]:
            errors.append("must disable dnsmasq when a custom DNS resolver is specified")
        elif not values["dns_resolver"] and not values["dnsmasq"]:
            errors.append("must specify a custom DNS resolver when dnsmasq is turned off")
    declarative = values.get("declarative_config")
    if values.get("database") == "off" and declarative and not os.path.isfile(declarative):
        errors.append(f"declarative_config: no such file at {declarative}")
    ttl = values.get("cluster_ttl_on_failure")
    if ttl is not None and ttl < 60:
        errors.append("cluster_ttl_on_failure must be at least 60 seconds")
    return errors


def env_name(key: str) -> str:
    """The environment variable that overrides property ``key``."""
    return f"KONG_{key.upper()}"
