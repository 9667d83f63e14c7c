"""The recognition service's settings: its port and the Slack app."""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator

from shared.infra.settings import ApiSettings


class RecognitionSettings(ApiSettings):
    """The recognition service: kudos, the directory API and the Slack app."""

    recognition_port: int = Field(default=8001, description="The recognition service's port.")
    slack_signing_secret: SecretStr | None = Field(
        default=None,
        description='The Slack app\'s signing secret (README, "Kudos from Slack"): every '
        "Slack request is checked with it; unset = no Slack routes (404).",
    )
    slack_bot_token: SecretStr | None = Field(
        default=None,
        description="The Slack app's bot token (xoxb-...), for the notes a reaction that "
        "cannot count sends its author; unset = none sent.",
    )
    slack_team_id: str | None = Field(
        default=None,
        pattern=r"^T[A-Z0-9]{2,20}$",
        description="The Slack workspace (T...) whose requests count: one signed with the "
        "app's secret for another workspace is refused. Required with the signing secret "
        "outside development.",
        examples=["T0123ABCD"],
    )
    slack_app_id: str | None = Field(
        default=None,
        pattern=r"^A[A-Z0-9]{2,20}$",
        description="The Slack app (A...) whose requests count; as RAPPORT_SLACK_TEAM_ID.",
        examples=["A0123ABCD"],
    )
    slack_public_confirmations: bool = Field(
        default=False,
        description="Also post each /kudos in its channel, naming the recipients and values.",
    )
    slack_reaction_emoji: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9_+\-']{1,100}$",
        description="Reacting with this emoji (its name, no colons) recognizes the message's "
        "author; unset = off.",
    )
    slack_reaction_value: str | None = Field(
        default=None, description="The value a reaction gives (one of RAPPORT_VALUES)."
    )
    slack_api_url: str = Field(
        default="https://slack.com/api/", description="Slack's Web API (tests point it here)."
    )

    @model_validator(mode="after")
    def _reactions_have_a_value(self) -> RecognitionSettings:
        if self.slack_reaction_emoji is not None and self.slack_reaction_value not in self.values:
            raise ValueError(
                "RAPPORT_SLACK_REACTION_VALUE must be one of RAPPORT_VALUES "
                f"{list(self.values)} when RAPPORT_SLACK_REACTION_EMOJI is set"
            )
        return self

    def unsafe(self) -> list[str]:
        problems = super().unsafe()
        if self.slack_signing_secret is not None:
            problems += [f"RAPPORT_SLACK_{n.upper()}_ID is not set (requests of other Slack "
                         f"{what} signed with the app's secret would count)"
                         for n, what in (("team", "workspaces"), ("app", "apps"))
                         if getattr(self, f"slack_{n}_id") is None]  # fmt: skip
        return problems
