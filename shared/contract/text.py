"""Text people typed: what shows, and what may reach a page or a header.

A message of zero-width spaces, joiners or bidirectional controls looks empty to every
reader: it is blank. A name is kept as typed, but its control and bidirectional-override
characters never reach a digest or a header, where they would reorder or hide what is
around them.
"""

from __future__ import annotations

import unicodedata

# Letters and symbols by Unicode that print nothing (Hangul fillers, the blank Braille
# pattern): the usual stuffing of "empty" messages.
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")
# Separators (Z*), controls, format characters, unassigned and private use (C*), and
# marks that combine with nothing when nothing else is there (Mn, Me).
_INVISIBLE = ("Z", "C", "Mn", "Me")


def is_blank(text: str) -> bool:
    """Whether ``text`` shows nothing: only spaces, controls, format characters (zero-width
    spaces and joiners, bidirectional controls), marks and blank letters."""
    return all(c in _BLANK_LETTERS or unicodedata.category(c).startswith(_INVISIBLE)
               for c in text)  # fmt: skip


def display_name(name: str) -> str:
    """A name fit for a page or a header: control and format characters (bidirectional
    overrides among them) become spaces, and runs of spaces one."""
    kept = "".join(" " if unicodedata.category(c).startswith("C") else c for c in name)
    return " ".join(kept.split())
