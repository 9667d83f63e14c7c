"""The feedback service's settings: its port and the key of respondents' pseudonyms."""

from __future__ import annotations

from pydantic import Field, SecretStr

from shared.infra.settings import MIN_SECRET_LENGTH, ApiSettings, SurveySettings

DEV_PSEUDONYM_KEY = "rapport-dev-pseudonym-key"


class FeedbackSettings(ApiSettings, SurveySettings):
    """The feedback service: survey answers, rounds and self-assessments."""

    feedback_port: int = Field(default=8002, description="The feedback service's port.")
    pseudonym_key: SecretStr = Field(
        default=SecretStr(DEV_PSEUDONYM_KEY),
        description="HMAC key that turns respondent ids into pseudonyms before anything "
        f"reaches Kafka; required (at least {MIN_SECRET_LENGTH} characters) outside "
        "development. Changing it breaks the link between a person's earlier and later "
        "answers.",
    )

    def unsafe(self) -> list[str]:
        problems = super().unsafe()
        key = self.pseudonym_key.get_secret_value()
        if key == DEV_PSEUDONYM_KEY or len(key) < MIN_SECRET_LENGTH:
            problems.append(
                f"RAPPORT_PSEUDONYM_KEY must be a secret of at least {MIN_SECRET_LENGTH} "
                "characters (the default would let anyone re-identify respondents)"
            )
        return problems
