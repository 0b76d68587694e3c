"""Template helpers for the scientists' pages."""

from django import template
from django.urls import NoReverseMatch, reverse

from labeler.dashboard.versions import finite

register = template.Library()


@register.simple_tag
def science_url(name: str, *args) -> str:
    """The URL of a page another app provides, or "" while it does not exist (the link is hidden)."""
    try:
        return reverse(name, args=args)
    except NoReverseMatch:
        return ""


@register.filter
def percent(value) -> str:
    """0.4213 -> "42%"; "" for None."""
    return "" if value is None else f"{100 * float(value):.0f}%"


@register.filter
def number(value, digits: int = 2) -> str:
    """A float with ``digits`` decimals; "–" for None, NaN or anything else not measured."""
    value = finite(value)
    return "–" if value is None else f"{value:.{int(digits)}f}"


@register.filter
def duration(seconds) -> str:
    """Seconds as "1 h 04 min", "3 min 20 s" or "12 s"; "" for None."""
    if seconds is None:
        return ""
    s = int(round(float(seconds)))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    if s >= 60:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s} s"
