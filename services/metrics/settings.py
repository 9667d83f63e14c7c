"""The metrics service's settings: its port and when a pattern of recognitions is a
gaming signal (README, "Metrics")."""

from __future__ import annotations

from pydantic import Field

from shared.figures.connections import Thresholds
from shared.infra.settings import HttpSettings, PrivacySettings

DEFAULT = Thresholds()


class MetricsSettings(HttpSettings, PrivacySettings):
    """The metrics service: every figure on /metrics for Prometheus."""

    metrics_port: int = Field(default=8003, description="The metrics service's port.")
    trading_min: int = Field(
        default=DEFAULT.trading_min,
        ge=1,
        description="Gaming signal, trading pair: each of two people gave the other at least "
        "this many recognitions in the window...",
    )
    trading_share: float = Field(
        default=DEFAULT.trading_share,
        gt=0,
        le=1,
        description="...and at least this share of all they gave.",
    )
    ring_min: int = Field(
        default=DEFAULT.ring_min,
        ge=1,
        description="Gaming signal, ring: three or more people, each of whom gave at least "
        "this many recognitions in the window, all of them to one another.",
    )
    burst_min: int = Field(
        default=DEFAULT.burst_min,
        ge=1,
        description="Gaming signal, burst: one giver's recognitions in one hour, at least "
        "this many...",
    )
    burst_factor: float = Field(
        default=DEFAULT.burst_factor,
        ge=1,
        description="...and at least this many times their usual rate (per active hour in "
        "the 28 days before).",
    )

    @property
    def thresholds(self) -> Thresholds:
        return Thresholds(self.trading_min, self.trading_share, self.ring_min,
                          self.burst_min, self.burst_factor)  # fmt: skip
