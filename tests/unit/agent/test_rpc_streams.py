"""Bounds on the agent's long-lived streams, per client address and in all."""

from __future__ import annotations

import pytest
from serverlessos_agent.errors import ResourceExhausted
from serverlessos_agent.rpc.streams import StreamSlots, peer_host


def test_peers_are_told_apart_by_address_not_port() -> None:
    assert peer_host("ipv4:10.0.0.1:5555") == "ipv4:10.0.0.1"
    assert peer_host("ipv6:[::1]:40000") == "ipv6:[::1]"
    assert peer_host("unix:/run/x.sock") == "unix:/run/x.sock"


def test_streams_are_bounded_per_peer_and_in_all_and_released() -> None:
    slots = StreamSlots("watch streams", per_peer=2, total=3)
    with slots.hold("ipv4:10.0.0.1:1"), slots.hold("ipv4:10.0.0.1:2"):
        per_peer = pytest.raises(ResourceExhausted, match=r"at most 2 watch streams .*10\.0\.0\.1")
        with per_peer, slots.hold("ipv4:10.0.0.1:3"):
            pass
        total = pytest.raises(ResourceExhausted, match="at most 3 watch streams at once")
        with slots.hold("ipv4:10.0.0.2:1"), total, slots.hold("ipv4:10.0.0.3:1"):
            pass
    with slots.hold("ipv4:10.0.0.1:4"), slots.hold("ipv4:10.0.0.1:5"):
        pass  # all released when the streams ended
