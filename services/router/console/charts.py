"""Small SVG charts drawn on the server for the console's reports: horizontal bars (with an
optional target mark per bar) and a line over time. Pure functions returning markup.

Each chart scales to its container (a `viewBox`, width 100%), so it reads at 390 px; it is
an `img` with a title and a description, and every page shows the same figures in a table
next to it, the text alternative for screen readers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

WIDTH = 360
"""The viewBox's width: drawn at about the width of a phone and scaled up or down."""
ROW_HEIGHT = 26
LABEL_WIDTH = 132
COLOURS = ("#1f6feb", "#f29900", "#1e8e3e", "#a142f4")


@dataclass(frozen=True)
class Bar:
    """One row of a bar chart: a label, one or more values (series) and an optional target."""

    label: str
    values: Sequence[float]
    target: float | None = None


def _number(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def _svg(height: int, title: str, description: str, body: str) -> Markup:
    return Markup(
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" width="100%" role="img" '
        f'aria-labelledby="{_id(title)}-t {_id(title)}-d" xmlns="http://www.w3.org/2000/svg">'
        f'<title id="{_id(title)}-t">{escape(title)}</title>'
        f'<desc id="{_id(title)}-d">{escape(description)}</desc>{body}</svg>')


def _id(title: str) -> str:
    return "chart-" + "".join(char if char.isalnum() else "-" for char in title.lower())[:40]


def bars(title: str, rows: Sequence[Bar], series: Sequence[str], unit: str = "",
         description: str = "") -> Markup:
    """Horizontal bars, one group per row (a bar per series), a black tick at the target."""
    series_count = max(1, len(series))
    top = max([0.0] + [max([*row.values, row.target or 0.0]) for row in rows]) or 1.0
    plot = WIDTH - LABEL_WIDTH - 44
    bar_height = (ROW_HEIGHT - 6) / series_count
    legend_height = 18 if series_count > 1 or any(row.target is not None for row in rows) else 0
    parts: list[str] = []
    x = 0
    for index, name in enumerate(series if series_count > 1 else []):
        parts.append(f'<rect x="{x}" y="4" width="10" height="10" '
                     f'fill="{COLOURS[index % len(COLOURS)]}"/>'
                     f'<text x="{x + 14}" y="13" font-size="11">{escape(name)}</text>')
        x += 24 + 7 * len(name)
    if any(row.target is not None for row in rows):
        parts.append(f'<rect x="{x}" y="2" width="3" height="14" fill="#1d2330"/>'
                     f'<text x="{x + 8}" y="13" font-size="11">target</text>')
    for number, row in enumerate(rows):
        y = legend_height + number * ROW_HEIGHT
        parts.append(f'<text x="{LABEL_WIDTH - 6}" y="{y + ROW_HEIGHT / 2 + 4:.1f}" '
                     f'font-size="11" text-anchor="end">{escape(row.label[:20])}</text>')
        for index, value in enumerate(row.values):
            width = plot * value / top
            bar_y = y + 3 + index * bar_height
            parts.append(
                f'<rect x="{LABEL_WIDTH}" y="{bar_y:.1f}" width="{width:.1f}" '
                f'height="{bar_height - 1:.1f}" fill="{COLOURS[index % len(COLOURS)]}"/>'
                f'<text x="{LABEL_WIDTH + width + 3:.1f}" y="{bar_y + bar_height - 2:.1f}" '
                f'font-size="10">{_number(value)}{escape(unit)}</text>')
        if row.target is not None:
            target_x = LABEL_WIDTH + plot * row.target / top
            parts.append(f'<rect x="{target_x - 1:.1f}" y="{y + 1}" width="3" '
                         f'height="{ROW_HEIGHT - 2}" fill="#1d2330"/>')
    height = legend_height + max(1, len(rows)) * ROW_HEIGHT + 4
    if not rows:
        parts.append(f'<text x="{WIDTH / 2}" y="{legend_height + 16}" font-size="12" '
                     'text-anchor="middle">No data in this period</text>')
    return _svg(height, title, description or title, "".join(parts))


def line(title: str, points: Sequence[tuple[str, float | None]], top: float = 1.0,
         unit: str = "", description: str = "") -> Markup:
    """A line over labelled points (days), from 0 to `top`; a gap where a value is None."""
    height, left, bottom, right = 160, 34, 24, 20
    plot_width, plot_height = WIDTH - left - right, height - bottom - 10
    step = plot_width / max(1, len(points) - 1)
    parts = [f'<line x1="{left}" y1="{10 + plot_height}" x2="{WIDTH - right}" '
             f'y2="{10 + plot_height}" stroke="#8a93a5"/>']
    for fraction in (0.0, 0.5, 1.0):
        y = 10 + plot_height * (1 - fraction)
        parts.append(f'<text x="{left - 4}" y="{y + 4:.1f}" font-size="10" text-anchor="end">'
                     f'{_number(top * fraction)}{escape(unit)}</text>'
                     f'<line x1="{left}" y1="{y:.1f}" x2="{WIDTH - right}" y2="{y:.1f}" '
                     'stroke="#e1e4ea"/>')
    segment: list[str] = []
    segments: list[list[str]] = [segment]
    label_every = max(1, len(points) // 6)
    for index, (label, value) in enumerate(points):
        x = left + index * step
        if index % label_every == 0:
            parts.append(f'<text x="{x:.1f}" y="{height - 6}" font-size="10" '
                         f'text-anchor="middle">{escape(label)}</text>')
        if value is None:
            segment = []
            segments.append(segment)
            continue
        y = 10 + plot_height * (1 - min(value, top) / top)
        segment.append(f"{x:.1f},{y:.1f}")
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{COLOURS[0]}"/>')
    parts.extend(f'<polyline points="{" ".join(each)}" fill="none" stroke="{COLOURS[0]}" '
                 'stroke-width="2"/>' for each in segments if len(each) > 1)
    if all(value is None for _, value in points):
        parts.append(f'<text x="{left + plot_width / 2:.1f}" y="{10 + plot_height / 2:.1f}" '
                     'font-size="12" text-anchor="middle">No data in this period</text>')
    return _svg(height, title, description or title, "".join(parts))
