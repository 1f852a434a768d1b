"""Figures as a person reads them on the status page, pure: dates and ages, sizes with units,
never epoch floats or raw byte counts; and the small HTML pieces the page is made of."""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape

NONE = "-"  # a figure not known (yet)


def size(value: object) -> str:
    """Bytes with a unit: ``496.4 MB``."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return NONE
    amount = float(value)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(amount) < 1000 or unit == "TB":
            return f"{int(amount)} B" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1000
    raise AssertionError("unreachable")


def duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{int(seconds)} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min"
    if seconds < 2 * 86400:
        hours, rest = divmod(int(seconds), 3600)
        return f"{hours} h {rest // 60} min" if rest >= 60 else f"{hours} h"
    return f"{int(seconds // 86400)} days"


def age(then: object, now: float) -> str:
    """``3 min ago``; ``never`` for no time."""
    if not isinstance(then, int | float) or isinstance(then, bool):
        return "never"
    if now - then < 5:
        return "just now"
    return duration(now - then) + " ago"


def date(then: object) -> str:
    if not isinstance(then, int | float) or isinstance(then, bool):
        return NONE
    return datetime.fromtimestamp(then, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def when(then: object, now: float) -> str:
    """An age, with the date on hover."""
    return f'<time title="{escape(date(then))}">{escape(age(then, now))}</time>'


def percent(ratio: object) -> str:
    return f"{ratio * 100:.1f}%" if isinstance(ratio, int | float) else NONE


def bar(fraction: float) -> str:
    width = max(0.0, min(1.0, fraction)) * 100
    return f'<span class="bar"><span style="width:{width:.1f}%"></span></span>'


def table(head: list[str], rows: list[list[str]], empty: str) -> str:
    if not rows:
        return f'<p class="muted">{escape(empty)}</p>'
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def figure(label: str, value: str, note: str = "", key: str = "") -> str:
    data = f' data-figure="{escape(key)}"' if key else ""
    small = f"<small>{note}</small>" if note else ""
    return f'<div class="fig"><b{data}>{value}</b><span>{escape(label)}</span>{small}</div>'
