"""HTML built from text that is escaped unless it says it is markup already.

Every value put into a page goes through ``html``: an event's payload, a receiver's
error text or a destination's name can hold ``<script>``, and shows as that text.

Usage::

    html("<td class={}>{}</td>", "dead", event.error)   # -> Markup, error escaped
    html("<ul>{}</ul>", join(html("<li>{}</li>", n) for n in names))
"""

from __future__ import annotations

from collections.abc import Iterable
from html import escape

__all__ = ["Markup", "html", "join"]


class Markup(str):
    """Text that is HTML already: put into a page as it is."""

    __slots__ = ()


def _escaped(value: object) -> str:
    if isinstance(value, Markup):
        return value
    return escape("" if value is None else str(value), quote=True)


def html(template: str, *values: object) -> Markup:
    """``template`` (markup) with each ``{}`` filled by a value, escaped unless ``Markup``."""
    return Markup(template.format(*map(_escaped, values)))


def join(parts: Iterable[object], separator: str = "") -> Markup:
    """The parts, each escaped unless ``Markup``, one after the other."""
    return Markup(separator.join(map(_escaped, parts)))
