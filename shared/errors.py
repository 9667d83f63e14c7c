"""Domain errors, mapped to HTTP status codes in one place (``shared.web``).

RapportError
├── InvalidInput        422  the request breaks a rule (unknown person, value, ...)
├── NotFound            404  the thing named in the path does not exist
├── BrokerUnavailable   503  the broker did not acknowledge; retry later
└── NotReady            503  the service is still reading what it needs; retry later
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


class BrokerUnavailable(RapportError):
    """The broker did not acknowledge in time; nothing was promised to the caller."""

    status = 503


class NotReady(RapportError):
    """The service has not read what the answer needs yet (at start-up, a large topic)."""

    status = 503
