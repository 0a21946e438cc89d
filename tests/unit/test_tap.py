"""twistd kong: options parse into a validated Config and makeService builds a KongNode."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from twisted.python import usage

from kongtx import tap
from kongtx.config import Address
from kongtx.node import KongNode
from kongtx.node_sites import endpoint


def test_options_read_kong_env(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    """KONG_* variables alone configure the node, and -p overrides the prefix."""
    monkeypatch.setenv("KONG_ADMIN_LISTEN", "127.0.0.1:18001")
    opts = tap.Options()
    opts.parseOptions(["-p", str(tmp_path)])
    config = opts["config"]
    assert config.admin_listen == Address("127.0.0.1", 18001)
    assert config.prefix.rstrip("/") == os.path.abspath(str(tmp_path))


def test_bad_value_is_a_usage_error_naming_the_property(monkeypatch: pytest.MonkeyPatch) -> None:
    """An invalid property stops twistd before anything binds, with the property named."""
    monkeypatch.setenv("KONG_PROXY_LISTEN", "not-an-address")
    with pytest.raises(usage.UsageError, match="proxy_listen"):
        tap.Options().parseOptions([])


def test_missing_conf_file_is_a_usage_error(tmp_path: object) -> None:
    """-c naming a missing file is refused with Kong's message."""
    with pytest.raises(usage.UsageError, match="no file at"):
        tap.Options().parseOptions(["-c", f"{tmp_path}/nope.conf"])


def test_make_service_builds_a_kong_node(tmp_path: object) -> None:
    """makeService returns the KongNode root service carrying the parsed config."""
    opts = tap.Options()
    opts.parseOptions(["-p", str(tmp_path)])
    service = tap.makeService(opts)
    assert isinstance(service, KongNode)
    assert service.config is opts["config"]


def test_endpoint_descriptions() -> None:
    """Listen addresses become strports descriptions; IPv6 colons are escaped."""
    assert endpoint(Address("127.0.0.1", 8001)) == "tcp:port=8001:interface=127.0.0.1"
    assert endpoint(Address("::1", 8001)) == "tcp:port=8001:interface=\\:\\:1"


MAKE_SERVICE = """
import sys
from twisted.logger import formatEvent, globalLogPublisher
from kongtx import tap
events = []
globalLogPublisher.addObserver(events.append)
options = tap.Options()
options.parseOptions(["-p", sys.argv[1]])
tap.makeService(options)
from twisted.internet import reactor
print(type(reactor).__name__)
print([formatEvent(e) for e in events if e.get("log_namespace") == "kongtx.build_info"][0])
"""


def test_make_service_runs_the_node_on_kongtx_reactor(tmp_path: object) -> None:
    """With no ``-r``, makeService installs kongtx's reactor and says so in the start line."""
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KONG_")}
    env["PYTHONPATH"] = repo
    out = subprocess.run(
        [sys.executable, "-c", MAKE_SERVICE, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=repo,
    )
    assert out.returncode == 0, out.stderr
    installed, start_line = out.stdout.splitlines()
    assert installed == "LeanReactor"
    assert start_line == "hot path: pure Python; reactor LeanReactor"
