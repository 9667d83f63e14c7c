"""Ports for the processes a test or `rapport kafka` starts side by side."""

from __future__ import annotations

from shared.infra.broker import free_port


def test_free_port_never_hands_out_one_port_twice() -> None:
    # The system offers released ports again: among 2,000 draws from its ~28,000
    # ephemeral ports, some repeat almost surely unless free_port remembers.
    ports = [free_port() for _ in range(2000)]
    assert len(set(ports)) == len(ports)
