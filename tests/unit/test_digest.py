"""What a digest says, against hand-computed values, and how it is rendered."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest

from services.aggregator import rounds as agg
from services.digest import render, subscriptions
from services.digest.api import due_week
from services.digest.erasure import remove_mail
from services.digest.service import Digest, NotAManager, TeamFigures, build
from services.digest.settings import DigestSettings
from shared.contract.events import (
    DayActivity,
    DirectoryEntry,
    Person,
    SelfAssessed,
    SurveyResponded,
    TeamSnapshot,
)
from shared.figures import connections as cx
from shared.figures import trust as tr
from shared.infra.settings import DEFAULT_DIMENSIONS, Settings
from shared.readmodels.directory import ERASED, DirectoryView, plain
from shared.readmodels.questions import DEFAULT

K = 5
SETTINGS = DigestSettings(anonymity_k=K, mail_from="Rapport <r@mail.x.io>")
TUESDAY = datetime(2026, 11, 10, 10, tzinfo=UTC)  # in 2026-W46
PEOPLE = [
    Person(id="lee", name="Lee Lead", email="lee@x.io", team_id="alpha"),
    *[Person(id=i, name=f"{i.upper()} Person", email=f"{i}@x.io", team_id="alpha",
             manager_id="lee") for i in "abcde"],
    Person(id="z", name="Zed", email="z@x.io", team_id="alpha", manager_id="a"),
    Person(id="x", name="Xi Beta", email="x@x.io", team_id="beta", manager_id="lee"),
    Person(id="y", name="Yu Beta", email="y@x.io", team_id="beta", manager_id="x"),
    Person(id="w", name="Wu Beta", email="w@x.io", team_id="beta", manager_id="x"),
    # Two more people in a team below k: with beta, five hidden people, so no other team
    # needs hiding to protect them (shared.figures.privacy).
    *[Person(id=i, name=f"{i} Gamma", email=f"{i}@x.io", team_id="gamma") for i in ("g1", "g2")],
]  # fmt: skip


def directory() -> DirectoryView:
    d = DirectoryView(Settings())
    for p in PEOPLE:
        d.put(p.id, plain(p))
    return d


def answers(respondents: int, team: str, score: int) -> TeamSnapshot:
    """A closed round of ``respondents`` answers, as the aggregator publishes it."""
    scores = dict.fromkeys(DEFAULT_DIMENSIONS, score) | {"growth": 2}
    units = []
    for n in range(respondents):
        r = SurveyResponded(survey_id="s1", respondent=f"{n:032x}", team_id=team,
                            answers=scores)  # fmt: skip
        units.append(agg.respond(None, r, f"e{n}", TUESDAY + timedelta(minutes=n)))
    closed = agg.close([u for u in units if u], "s1", DEFAULT.dimension_of, K, K)
    state = agg.add_result(None, closed[0]) if closed else None
    prediction = SelfAssessed(survey_id="s1", leader_id="lee", team_id=team,
                              predicted={"growth": 5, "direction": 4})  # fmt: skip
    state = agg.assess(state, prediction, "p1", TUESDAY)
    trust = agg.team_trust(state, {})
    return TeamSnapshot(team_id=team, generated_at=TUESDAY, trust=trust)


def snapshots() -> dict[str, TeamSnapshot]:
    alpha = answers(5, "alpha", 4).model_copy(
        update={
            "days": {
                "2026-11-10": DayActivity(received={"a": 2, "b": 1}, given={"b": 1, "a": 2},
                                          values={"growth": 2, "direction": 1}, cross_team=1,
                                          links={"a": {"b": 1, "y": 1}, "b": {"a": 1}}),
                "2026-11-03": DayActivity(received={"a": 1}, given={"b": 1}, values={"growth": 1},
                                          links={"b": {"a": 1}, "lee": {"c": 1}}),
            }
        }
    )  # fmt: skip
    beta = answers(3, "beta", 5).model_copy(  # three respondents: below k
        update={"days": {"2026-10-14": DayActivity(links={"x": {"d": 1}})}}  # only a week ago
    )
    return {"alpha": alpha, "beta": beta}


def graph(last_day: date, days: int) -> cx.Graph:
    return cx.graph(snapshots().values(), last_day, days)


def digest(manager: str = "lee") -> Digest:
    return build(manager, "2026-W46", directory(), snapshots().get, graph, DEFAULT, K)


def figures(d: Digest) -> TeamFigures:
    assert d.figures is not None
    return d.figures


def test_appreciation_figures_match_hand_computed_values() -> None:
    d = digest()
    assert d.team_id == "alpha"  # where lee's reports are (one of them is in beta)
    assert (d.first_day.isoformat(), d.last_day.isoformat()) == ("2026-11-09", "2026-11-15")
    f = figures(d)
    assert (f.received, f.given) == (3, 3)
    assert f.top_values == [("growth", 2), ("direction", 1)]
    assert f.coverage == pytest.approx(2 / 7) and f.coverage_before == pytest.approx(1 / 7)
    assert f.cross_team == pytest.approx(1 / 3)
    # lee's own people with nothing in 14 days, by name; never z, who reports to a.
    assert [p.id for p in d.unrecognized] == ["c", "d", "e", "x"]
    assert [(p.week, p.received) for p in f.trend][-2:] == [("2026-W45", 1), ("2026-W46", 3)]
    assert len(f.trend) == 8


def test_trust_figures_suggestions_and_the_below_k_team() -> None:
    d = digest()
    trust = figures(d).trust
    assert trust is not None
    f = tr.figures(snapshots()["alpha"].trust, tr.trailing(d.last_day, 28), 7)
    assert f is not None and trust.index == pytest.approx(f.index)
    assert trust.index == pytest.approx(100 * 6 / 7)  # growth 2 for all, the rest 4
    growth = next(r for r in trust.dimensions if r.dimension == "growth")
    assert (growth.score, growth.favorable, growth.gap) == (2.0, 0.0, 3.0)
    assert trust.change is None  # nothing published in the 28 days to a week earlier
    assert d.actions[0].startswith("Ask each report in your next 1:1")  # weakest: growth
    assert d.actions[1].startswith("You rated growth 3.0 points higher")  # largest gap
    assert d.actions[2].startswith("Recognize C Person, D Person, E Person and 1 more")
    few = dataclasses.replace(d, figures=dataclasses.replace(figures(d), trust=None))
    text = render.text(few, SETTINGS)
    assert "Not enough survey answers yet" in text and "Trust index" not in text


def test_a_team_below_k_gets_its_people_named_to_its_manager_and_no_team_figure() -> None:
    beta = build("x", "2026-W46", directory(), snapshots().get, graph, DEFAULT, K)
    assert beta.team_id == "beta" and beta.members == 3 and beta.figures is None
    assert [p.id for p in beta.connections.isolated] == ["w"]  # per-person facts: theirs
    text, page = render.text(beta, SETTINGS), render.preview(beta, SETTINGS)
    assert "Team figures appear for teams of at least 5 active members" in text
    assert "beta has 3." in text
    for shown in (text, page):
        assert not any(
            word in shown
            for word in (
                "Recognitions received",
                "Trust",
                "Coverage",
                "exchanged recognition with",
                "EIGHT WEEKS",
            )
        )
    msg = render.message(beta, SETTINGS)
    assert msg["Subject"] == "beta, 2026-W46: your weekly digest"
    assert not [p for p in msg.walk() if p.get_content_type() == "image/png"]  # no chart


def test_a_team_that_would_reveal_a_smaller_one_by_subtraction_gets_no_team_figure() -> None:
    """Without gamma, beta (3 people) is the only hidden team: alpha's figures beside the
    organisation's totals would be beta's. Alpha, the smallest published team, is hidden
    too."""
    view = DirectoryView(Settings())
    for p in PEOPLE:
        if p.team_id != "gamma":
            view.put(p.id, plain(p))
    d = build("lee", "2026-W46", view, snapshots().get, graph, DEFAULT, K)
    assert d.team_id == "alpha" and d.members == 7 and d.figures is None
    assert [p.id for p in d.unrecognized] == ["c", "d", "e", "x"]  # still, to their manager
    assert "Team figures are withheld" in render.text(d, SETTINGS)


def test_connections_name_only_the_managers_own_people() -> None:
    d = digest()
    c = d.connections
    # 28 days to 15 Nov: a -> y (beta). To 8 Nov: x -> d (beta) on 14 Oct.
    assert (figures(d).breadth, figures(d).breadth_before) == (1, 1)
    # lee's reports with no link in 28 days (x in beta too); never z, who reports to a.
    assert [p.id for p in c.isolated] == ["d", "e", "x"]
    assert [p.id for p in c.not_recognized] == ["a", "b", "d", "e", "x"]  # lee thanked c
    assert c.action.startswith("Check in with D Person, E Person, Xi Beta: nobody")
    text = render.text(digest(), SETTINGS)
    assert "Teams exchanged recognition with: 1 (a week before: 1)" in text
    assert "Neither gave nor received any recognition: D Person, E Person, Xi Beta." in text
    beta = build("x", "2026-W46", directory(), snapshots().get, graph, DEFAULT, K).connections
    assert [p.id for p in beta.isolated] == ["w"] and [p.id for p in beta.not_recognized] == [
        "w",
        "y",
    ]


def test_only_managers_get_a_digest() -> None:
    with pytest.raises(NotAManager):
        digest("c")
    with pytest.raises(NotAManager):
        digest("nobody")


def erase(view: DirectoryView, person_id: str) -> None:
    """Their entry as the recognition service writes it at erasure."""
    entry = view.get(person_id)
    assert entry is not None
    kept = entry.model_dump(exclude={"name", "email", "sealed_contact", "slack_id", "erased"})
    view.put(person_id, DirectoryEntry(**kept, erased=True))


def test_an_erased_person_is_counted_and_never_named_and_an_erased_manager_gets_none() -> None:
    before, view = digest(), directory()
    erase(view, "d")
    d = build("lee", "2026-W46", view, snapshots().get, graph, DEFAULT, K)
    assert d.members == before.members and d.figures == before.figures  # still counted
    assert [p.name for p in d.connections.isolated] == ["E Person", "Xi Beta", ERASED]
    assert "d" in d.named and "D Person" not in render.text(d, SETTINGS)
    assert f"recognition: E Person, Xi Beta, {ERASED}." in render.text(d, SETTINGS)
    erase(view, "lee")
    with pytest.raises(NotAManager, match="erased"):  # no one to send it to
        build("lee", "2026-W46", view, snapshots().get, graph, DEFAULT, K)
    assert build("a", "2026-W46", view, snapshots().get, graph, DEFAULT, K).named == ("a", "z")


def test_the_outbox_copies_of_a_digest_naming_someone_are_removed(tmp_path: Path) -> None:
    for n, manager in enumerate(("lee", "x", "lee")):
        msg = EmailMessage()
        msg["Message-ID"] = f"<digest.2026-W{46 + n}.{manager}@x.io>"
        msg.set_content("Neither gave nor received any recognition: D Person.")
        (tmp_path / f"{n}.eml").write_bytes(bytes(msg))
    (tmp_path / "notes.txt").write_text("not a mail")
    assert remove_mail(tmp_path, {"<digest.2026-W46.lee@x.io>", "<digest.2026-W48.lee@x.io>"}) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1.eml", "notes.txt"]
    assert remove_mail(tmp_path, {"<digest.2026-W46.lee@x.io>"}) == 0  # again: nothing


def test_the_email_has_text_html_and_the_chart_inline() -> None:
    d = digest()
    msg = render.message(d, SETTINGS)
    assert msg["To"] == "Lee Lead <lee@x.io>"
    assert msg["Message-ID"] == "<digest.2026-W46.lee@mail.x.io>"  # RAPPORT_MAIL_FROM's domain
    assert msg["Subject"] == "alpha, 2026-W46: 3 recognitions, trust 86"
    assert str(msg["Date"]).endswith("+0000")  # a known zone; "-0000" says it is unknown
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = subscriptions.url(SETTINGS, "lee")
    assert msg["List-Unsubscribe"] == f"<{link}>"
    assert link.startswith("http://127.0.0.1:8004/v1/digests/unsubscribe/lee?token=")
    assert link != subscriptions.url(SETTINGS, "lea")  # each manager's own
    plain = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert isinstance(plain, EmailMessage) and isinstance(html, EmailMessage)
    assert "Recognitions received: 3" in plain.get_content()
    [image] = [p for p in msg.walk() if p.get_content_type() == "image/png"]
    assert image.get_content_disposition() == "inline"  # shown in the page, not listed
    cid = str(image["Content-ID"]).strip("<>")
    assert cid.endswith("@mail.x.io")
    assert f'src="cid:{cid}"' in html.get_content()
    assert image.get_content()[:8] == b"\x89PNG\r\n\x1a\n"
    # The preview is the same HTML, with the chart inlined for a browser.
    preview = render.preview(d, SETTINGS)
    assert (
        re.sub(r'src="data:image/png;base64,[^"]+"', "SRC", preview).strip()
        == re.sub(r'src="cid:[^"]+"', "SRC", html.get_content()).strip()
    )


def test_one_recognition_is_one_recognition() -> None:
    d = digest()
    one = dataclasses.replace(d, figures=dataclasses.replace(figures(d), received=1, trust=None))
    assert render.subject(one) == "alpha, 2026-W46: 1 recognition"
    none = dataclasses.replace(d, figures=dataclasses.replace(figures(d), received=0, trust=None))
    assert render.subject(none) == "alpha, 2026-W46: 0 recognitions"


def test_the_message_id_domain_comes_from_its_setting() -> None:
    s = DigestSettings(mail_from="Rapport <r@x.io>", mail_domain="digest.example.org")
    assert str(render.message(digest(), s)["Message-ID"]).endswith("@digest.example.org>")
    with pytest.raises(ValueError, match="mail_domain"):
        DigestSettings(mail_domain="no domain")


@pytest.mark.parametrize(
    ("timezone", "now", "week"),
    [
        ("Asia/Tokyo", datetime(2026, 11, 23, 0, 30, tzinfo=UTC), "2026-W47"),  # Mon 09:30
        ("Europe/Berlin", datetime(2026, 11, 23, 6, 30, tzinfo=UTC), None),  # Mon 07:30
        ("Europe/Berlin", datetime(2026, 11, 23, 8, 0, tzinfo=UTC), "2026-W47"),  # Mon 09:00
        ("America/New_York", datetime(2026, 11, 23, 0, 30, tzinfo=UTC), "2026-W46"),  # Sun
    ],
)
def test_a_digest_is_due_at_nine_on_monday_in_the_managers_timezone(
    timezone: str, now: datetime, week: str | None
) -> None:
    manager = PEOPLE[0].model_copy(update={"timezone": timezone})
    assert due_week(manager, now, DigestSettings()) == week


def test_names_reach_the_digest_without_control_or_bidirectional_characters() -> None:
    tricky = "D\u202eevil\u202c Per\u0007son\u2066x\u2069"  # an override, a bell, an isolate
    people = [p.model_copy(update={"name": tricky}) if p.id == "d" else p for p in PEOPLE]
    view = DirectoryView(Settings())
    for p in people:
        view.put(p.id, plain(p))
    assert view.get("d") is not None and view.get("d").name == tricky  # kept as typed
    d = build("lee", "2026-W46", view, snapshots().get, graph, DEFAULT, K)
    msg = render.message(d, SETTINGS)
    parts = [render.preview(d, SETTINGS), render.text(d, SETTINGS), d.connections.action]
    parts += d.actions
    parts += [p.get_content() for p in msg.walk() if p.get_content_type().startswith("text/")]
    for shown in parts:
        assert not any(c in shown for c in "\u202e\u202c\u0007\u2066\u2069"), shown
    assert "D evil Per son x" in render.text(d, SETTINGS)
