"""The aggregator's settings: how long an event id counts once, the comments' k and
where a worker serves /metrics (and the master key: it opens survey answers)."""

from __future__ import annotations

from pydantic import Field

from shared.infra.settings import SealingSettings, SurveySettings


class AggregatorSettings(SealingSettings, SurveySettings):
    """An aggregator worker (faust): every figure from the recognition and fact topics."""

    dedupe_horizon_days: int = Field(
        default=8,
        ge=7,
        description="How long an event id is remembered: the same (source, id) within it "
        "counts once, whatever else its records say.",
    )
    comment_k: int = Field(
        default=5, ge=3, description="Fewest survey comments shown together (never below 3)."
    )
    aggregator_metrics_port: int = Field(
        default=8005,
        description="Where an aggregator worker serves /metrics (`rapport run` gives worker i "
        "this port + i); 0 = nowhere.",
    )
