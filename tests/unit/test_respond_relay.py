"""The relayed response's own headers (kongtx.proxy.respond.Responder.relay)."""

from __future__ import annotations

from tests.unit.test_pipeline import FakeResponse, PipelineBase


class RelayHeaderTests(PipelineBase):
    def relayed(
        self, headers: list[tuple[str, str]], length: int | None = 5
    ) -> list[tuple[str, str]]:
        _, down = self.start(self.pipeline(), "/p")
        assert self.client.pending is not None
        self.client.pending.callback(FakeResponse(headers=headers, length=length))
        return list(down.headers)

    def test_ours_replace_the_upstreams_every_value(self) -> None:
        headers = self.relayed(
            [
                ("Via", "1.1 other"),
                ("X-Up", "1"),
                ("x-kong-proxy-latency", "99"),
                ("Content-Length", "77"),
                ("VIA", "again"),
                ("X-Kong-Upstream-Latency", "98"),
                ("Date", "upstream-date"),
            ]
        )
        names = [k.lower() for k, _ in headers]
        for name in ("via", "x-kong-proxy-latency", "x-kong-upstream-latency", "content-length"):
            assert names.count(name) == 1, name
        values = dict((k.lower(), v) for k, v in headers)
        assert values["via"] == "kong/0.9.9" and values["content-length"] == "5"
        assert values["x-kong-proxy-latency"] != "99" and values["x-kong-upstream-latency"] != "98"
        assert values["date"] == "upstream-date" and names.count("date") == 1
        assert values["x-up"] == "1"
        assert [k for k, _ in headers[:3]] == ["X-Up", "Date", "Content-Length"]

    def test_nothing_of_ours_sent_upstream_keeps_the_order_and_adds_a_date(self) -> None:
        headers = self.relayed([("A", "1"), ("B", "2")], length=None)
        assert [k for k, _ in headers] == [
            "A",
            "B",
            "Date",
            "Via",
            "X-Kong-Upstream-Latency",
            "X-Kong-Proxy-Latency",
        ]


def test_header_entries_made_once_read_as_made_per_response() -> None:
    """The latency, Content-Length and Date entries the relay appends, shared between
    responses, carry the values a per-response string would."""
    from kongtx.proxy import respond

    for ms in (0, 7, 99, 100, 12345):
        entry = respond._latency_entry(respond._UPSTREAM_LATENCY, ms)
        assert entry == ("x-kong-upstream-latency", "X-Kong-Upstream-Latency", str(ms))
        entry = respond._latency_entry(respond._PROXY_LATENCY, ms)
        assert entry == ("x-kong-proxy-latency", "X-Kong-Proxy-Latency", str(ms))
    for length in (0, 5, 1 << 40):
        assert respond._length_entry(length) == ("content-length", "Content-Length", str(length))
    assert respond._length_entry(5) is respond._length_entry(5)
    for length in range(2000):  # bounded
        respond._length_entry(length)
    assert len(respond._LENGTHS) <= 1024
