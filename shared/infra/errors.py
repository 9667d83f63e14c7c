"""Domain errors, mapped to HTTP status codes in one place (``shared.infra.web``).

RapportError
├── InvalidInput          422  the request breaks a rule (unknown person, value, ...)
├── NotFound              404  the thing named in the path does not exist
└── Unavailable           503  a dependency is missing; retry after Retry-After
    ├── BrokerUnavailable      the broker did not answer or acknowledge
    ├── NotReady               the service is still reading what it needs
    └── SmtpUnavailable        the mail server did not answer
"""

from __future__ import annotations


class RapportError(Exception):
    status = 500


class InvalidInput(RapportError):
    """Invalid input; ``field`` names where the problem is."""

    status = 422

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class NotFound(RapportError):
    status = 404


class Unavailable(RapportError):
    """A dependency is missing: nothing was done, and the caller may try again."""

    status = 503
    code = "unavailable"  # the answer's ``error``: what is missing

    def public(self) -> str:
        """What the caller is told."""
        return str(self)


class BrokerUnavailable(Unavailable):
    """The broker did not answer or acknowledge in time; nothing was promised."""

    code = "broker_unavailable"

    def public(self) -> str:  # the broker's own words stay in the log
        return "the event broker is unavailable; retry"


class NotReady(Unavailable):
    """The service has not read what the answer needs yet (at start-up, a large topic)."""

    code = "not_ready"


class SmtpUnavailable(Unavailable):
    """The SMTP server did not answer: no digest can be sent now."""

    code = "smtp_unavailable"
