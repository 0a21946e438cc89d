"""HealthState: verdicts per upstream and address, listeners only on change."""

from __future__ import annotations

from kongtx.balancer.health_state import HealthState, address


def test_everything_healthy_until_marked() -> None:
    state = HealthState()
    assert state.is_healthy("u1", "127.0.0.1:80")
    assert state.unhealthy("u1") == frozenset()


def test_changes_are_reported_once_with_their_source() -> None:
    state = HealthState()
    heard: list[tuple[str, str, bool, str]] = []
    state.add_listener(lambda u, a, h, s: heard.append((u, a, h, s)))
    assert state.set("u1", "10.0.0.1:80", False, "active")
    assert not state.set("u1", "10.0.0.1:80", False, "passive")  # no change: silent
    assert not state.is_healthy("u1", "10.0.0.1:80")
    assert state.is_healthy("u2", "10.0.0.1:80")  # per upstream
    assert state.set("u1", "10.0.0.1:80", True, "cluster")
    assert not state.set("u1", "10.0.0.1:80", True, "manual")
    assert heard == [("u1", "10.0.0.1:80", False, "active"), ("u1", "10.0.0.1:80", True, "cluster")]
    assert state.unhealthy("u1") == frozenset()


def test_forget_and_remove_listener() -> None:
    state = HealthState()
    heard: list[object] = []

    def listener(*args: object) -> None:
        heard.append(args)

    state.add_listener(listener)
    state.set("u1", "a:1", False, "manual")
    state.forget("u1")
    assert state.is_healthy("u1", "a:1")
    state.remove_listener(listener)
    state.set("u1", "a:1", False, "manual")
    assert len(heard) == 1


def test_forget_listeners_hear_forget_and_retain() -> None:
    """Dropped verdicts are announced to forget listeners: None for a deleted upstream,
    the kept addresses for retain (even when none was unhealthy)."""
    state = HealthState()
    heard: list[tuple[str, object]] = []

    def listener(upstream_id: str, kept: object) -> None:
        heard.append((upstream_id, kept))

    state.add_forget_listener(listener)
    state.set("u1", "a:1", False, "manual")
    assert state.retain("u1", {"b:2"}) == ["a:1"]
    state.retain("u2", {"c:3"})
    state.forget("u1")
    state.remove_forget_listener(listener)
    state.forget("u2")
    assert heard == [("u1", {"b:2"}), ("u2", {"c:3"}), ("u1", None)]


def test_address_brackets_ipv6() -> None:
    assert address("127.0.0.1", 80) == "127.0.0.1:80"
    assert address("::1", 8080) == "[::1]:8080"
