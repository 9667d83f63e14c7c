"""The feedback service's settings: its port (and the API's and the survey's)."""

from __future__ import annotations

from pydantic import Field

from shared.infra.settings import ApiSettings, SurveySettings


class FeedbackSettings(ApiSettings, SurveySettings):
    """The feedback service: survey answers, rounds and self-assessments."""

    feedback_port: int = Field(default=8002, description="The feedback service's port.")
