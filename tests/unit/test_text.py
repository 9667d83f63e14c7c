"""What counts as blank, and what of a name may be shown."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from services.recognition.models import RecognitionIn
from services.recognition.slack import Kudos
from shared.contract.events import Person, RecognitionGiven, SurveyAnswers
from shared.contract.text import display_name, is_blank

INVISIBLE = [
    "\u200b\u200b",  # zero-width spaces
    "\u200d\u200c\u2060",  # joiners, word joiner
    "\u202e\u202d\u2066\u2069\u200f",  # bidirectional overrides, isolates, a mark
    " \ufeff\u3164\u2800\u00ad ",  # BOM, Hangul filler, blank Braille, soft hyphen
    "\u0301\u0301",  # combining marks on nothing
]


@pytest.mark.parametrize("text", INVISIBLE)
def test_a_message_of_only_invisible_characters_is_blank(text: str) -> None:
    assert is_blank(text)
    fields = {"giver_id": "a", "recipient_ids": ("b",), "message": text, "values": ("growth",)}
    with pytest.raises(ValidationError, match="message: must not be blank"):
        RecognitionIn(**fields)  # the HTTP body
    with pytest.raises(ValidationError, match="message: must not be blank"):
        RecognitionGiven(**fields, occurred_at=datetime.now(UTC))  # straight to the topic
    assert SurveyAnswers(survey_id="s", answers={"x": 3}, comment=text).comment is None


@pytest.mark.parametrize("text", ["ok", "👍", "\u200bthanks\u200b", "謝謝", "é", "🧑\u200d💻"])
def test_anything_that_shows_is_not_blank(text: str) -> None:
    assert not is_blank(text)


def test_display_names_lose_controls_and_overrides_but_keep_the_rest() -> None:
    assert display_name("Ann\u202eeM\u202c Lee\u0007\n") == "Ann eM Lee"
    assert display_name("Zoë 李") == "Zoë 李"


@pytest.mark.parametrize("timezone", ["x" * 300, "Europe/" + "a" * 250, "../../etc", "\x00"])
def test_an_unusable_time_zone_is_a_validation_error_whatever_its_length(timezone: str) -> None:
    with pytest.raises(ValidationError, match="timezone"):
        Person(id="a", name="A", email="a@x.io", team_id="t", timezone=timezone)


@pytest.mark.parametrize("text", ["<" * 40_000, "<@U0ANN|" * 5_000, "<#C1|" * 8_000,
                                  "<!" + "<https://x|" * 4_000])  # fmt: skip
def test_reading_a_slack_text_is_linear_in_its_length(text: str) -> None:
    started = time.process_time()
    Kudos.parse(text)
    # Quadratic, 12,000 characters took 4.9 s (40,000: about a minute); linear, milliseconds.
    assert time.process_time() - started < 1
