"""The survey catalogue: items on a 1-5 scale, each measuring one trust dimension, plus eNPS.

By default one item per dimension, whose id is the dimension's name (ARCHITECTURE §4).
``RAPPORT_QUESTIONS_FILE`` replaces it with a YAML file of the same shape::

    items:
      - {id: direction, dimension: direction, text: "I know what is expected of me."}
    enps: "How likely are you to recommend this team as a place to work?"

The feedback service validates answers against it and the aggregator maps items to
dimensions with it, so both must be given the same file.
"""

from __future__ import annotations

from collections.abc import Collection
from functools import cache
from pathlib import Path
from typing import Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.contract.events import Id
from shared.infra.settings import SurveySettings

DEFAULT_TEXTS = {
    "direction": "I know what is expected of me and where our team is heading.",
    "empowerment": "I have the freedom to decide how I do my work.",
    "appreciation": "I feel appreciated for the work I do.",
    "growth": "I am learning and growing in my role.",
    "transparency": "My manager shares information openly, including bad news.",
    "partnership": "My manager and I work as partners towards shared goals.",
    "wellbeing": "My manager genuinely cares about my wellbeing.",
}
DEFAULT_ENPS = "How likely are you to recommend this team as a place to work? (0-10)"


class Item(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    id: Id
    dimension: Id
    text: str = Field(min_length=1, max_length=500)


class Catalogue(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    items: tuple[Item, ...] = Field(min_length=1)
    enps: str = Field(default=DEFAULT_ENPS, min_length=1, max_length=500)

    @model_validator(mode="after")
    def _unique(self) -> Self:
        ids = [i.id for i in self.items]
        if len(set(ids)) != len(ids):
            raise ValueError("items: duplicate item id")
        return self

    @property
    def dimensions(self) -> tuple[str, ...]:
        """Dimensions in catalogue order, each once."""
        return tuple(dict.fromkeys(i.dimension for i in self.items))

    @property
    def dimension_of(self) -> dict[str, str]:
        return {i.id: i.dimension for i in self.items}

    def check_answers(self, answers: Collection[str]) -> None:
        """Raise ``ValueError`` unless every item, and nothing else, is answered.

        Every item is required: a skipped item would leave a dimension with fewer
        answers than the k respondents its block promises.
        """
        expected = {i.id for i in self.items}
        if missing := sorted(expected - set(answers)):
            raise ValueError(f"answers: missing item(s) {missing}")
        if unknown := sorted(set(answers) - expected):
            raise ValueError(f"answers: unknown item(s) {unknown}; see GET /v1/questions")

    def check_predicted(self, predicted: Collection[str]) -> None:
        """Raise ``ValueError`` if a prediction names a dimension not in the catalogue."""
        if unknown := sorted(set(predicted) - set(self.dimensions)):
            raise ValueError(
                f"predicted: unknown dimension(s) {unknown}; allowed: {list(self.dimensions)}"
            )


DEFAULT = Catalogue(items=tuple(Item(id=d, dimension=d, text=t) for d, t in DEFAULT_TEXTS.items()))


@cache
def _load(path: Path) -> Catalogue:
    return Catalogue.model_validate(yaml.safe_load(path.read_text()))


def catalogue(settings: SurveySettings) -> Catalogue:
    """The configured catalogue (read once per process)."""
    return DEFAULT if settings.questions_file is None else _load(settings.questions_file)
