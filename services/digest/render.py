"""Turn a digest into an e-mail: HTML and plain text from jinja2 templates, a PNG chart.

The preview renders the same HTML, with the chart as a data URI instead of a ``cid:``
reference to the inline image.
"""

from __future__ import annotations

import base64
import io
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

import matplotlib

matplotlib.use("Agg")  # no display: render to PNG in memory

import matplotlib.pyplot as plt
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from shared.contract.events import Contact
from shared.contract.text import display_name

from . import subscriptions
from .service import UNRECOGNIZED_DAYS, Digest, TeamFigures
from .settings import DigestSettings

MISSING = "\u2013"  # an en dash where a figure is not available


def _pct(value: float | None) -> str:
    return MISSING if value is None else f"{100 * value:.0f}%"


def _signed(value: float | None) -> str:
    return MISSING if value is None else f"{value:+.1f}"


def _signed_pct(value: float | None) -> str:
    return MISSING if value is None else f"{100 * value:+.0f} pts"


_env = Environment(
    loader=PackageLoader("services.digest", "templates"),
    autoescape=select_autoescape(["html.j2"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _first_name(name: str) -> str:
    words = display_name(name).split()
    return words[0] if words else "there"


# Every name through ``name`` (or ``first_name``): no control or bidirectional override
# from the directory reaches the page or the text.
_env.filters.update(
    pct=_pct, signed=_signed, signed_pct=_signed_pct, first_name=_first_name, name=display_name
)


def _count(n: int, noun: str) -> str:
    """``1 recognition``, ``2 recognitions``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


_env.filters["count"] = _count


def subject(d: Digest) -> str:
    if d.figures is None:
        return f"{d.team_id}, {d.week}: your weekly digest"
    trust = f", trust {d.figures.trust.index:.0f}" if d.figures.trust else ""
    return f"{d.team_id}, {d.week}: {_count(d.figures.received, 'recognition')}{trust}"


def chart(figures: TeamFigures) -> bytes:
    """Bars: recognitions received per week; line: trust index (0-100) where published."""
    trend = figures.trend
    fig, bars = plt.subplots(figsize=(5.6, 2.2), dpi=200)
    try:
        labels = [p.week[-3:] for p in trend]
        bars.bar(labels, [p.received for p in trend], color="#93c5fd", label="recognitions")
        bars.set_ylabel("recognitions", fontsize=7)
        bars.tick_params(labelsize=7)
        line = bars.twinx()
        points = [(i, p.trust_index) for i, p in enumerate(trend) if p.trust_index is not None]
        if points:
            xs, ys = zip(*points, strict=True)
            line.plot(xs, ys, color="#b45309", marker="o", linewidth=2, label="trust index")
        line.set_ylim(0, 100)
        line.set_ylabel("trust index", fontsize=7)
        line.tick_params(labelsize=7)
        for ax in (bars, line):
            ax.spines[["top"]].set_visible(False)
        fig.tight_layout()
        out = io.BytesIO()
        fig.savefig(out, format="png")
        return out.getvalue()
    finally:
        plt.close(fig)


def html(d: Digest, chart_src: str | None, settings: DigestSettings) -> str:
    """``chart_src``: where the chart is, if the digest has one (team figures)."""
    return _env.get_template("digest.html.j2").render(
        d=d, subject=subject(d), chart_src=chart_src, k=settings.anonymity_k,
        unrecognized_days=UNRECOGNIZED_DAYS,
        unsubscribe=subscriptions.url(settings, d.manager.id),
    )  # fmt: skip


def text(d: Digest, settings: DigestSettings) -> str:
    return _env.get_template("digest.txt.j2").render(
        d=d, k=settings.anonymity_k, unrecognized_days=UNRECOGNIZED_DAYS,
        unsubscribe=subscriptions.url(settings, d.manager.id),
    )  # fmt: skip


def preview(d: Digest, settings: DigestSettings) -> str:
    """The HTML part exactly as sent, with the chart inlined for a browser."""
    src = None
    if d.figures is not None:
        src = "data:image/png;base64," + base64.b64encode(chart(d.figures)).decode()
    return html(d, src, settings)


def subscription_page(subscribed: bool, changed: bool, *, unsubscribe: str, subscribe: str) -> str:
    """The page behind a digest's unsubscribe link."""
    return _env.get_template("subscription.html.j2").render(
        subscribed=subscribed, changed=changed, unsubscribe=unsubscribe, subscribe=subscribe
    )


def recipient(person: Contact) -> Address:
    """The one address a person's mail goes to: their directory e-mail (checked as one
    plain address when it entered the directory), their name as a quoted display name
    (it never adds or changes an address, whatever it holds)."""
    return Address(display_name=display_name(person.name), addr_spec=person.email)


def message(d: Digest, settings: DigestSettings) -> EmailMessage:
    """The e-mail: plain text, then HTML with the chart as a related inline image."""
    domain = settings.message_id_domain
    msg = EmailMessage()
    msg["Subject"] = subject(d)
    msg["From"] = settings.mail_from
    msg["To"] = recipient(d.to)
    msg["Date"] = format_datetime(datetime.now(UTC))  # "+0000": the zone is known
    # Stable per (manager, week): a mail system that sees it twice can tell.
    msg["Message-ID"] = f"<digest.{d.week}.{d.manager.id}@{domain}>"
    # Recurring mail a program sends (RFC 3834), that its reader can stop in one click
    # (RFC 2369, RFC 8058).
    msg["Auto-Submitted"] = "auto-generated"
    msg["List-Id"] = f"Rapport weekly digest <digest.{domain}>"
    msg["List-Unsubscribe"] = f"<{subscriptions.url(settings, d.manager.id)}>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg.set_content(text(d, settings))
    if d.figures is None:
        msg.add_alternative(html(d, None, settings), subtype="html")
        return msg
    cid = make_msgid(domain=domain)
    msg.add_alternative(html(d, f"cid:{cid[1:-1]}", settings), subtype="html")
    [_, html_part] = msg.iter_parts()
    assert isinstance(html_part, EmailMessage)
    html_part.add_related(chart(d.figures), maintype="image", subtype="png", cid=cid,
                          disposition="inline", filename="trend.png")  # fmt: skip
    return msg
