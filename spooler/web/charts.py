"""Line charts as SVG, drawn on the server: no script and nothing from a CDN, so they show
on an operator's host without internet, and under a policy that allows no inline script.

Usage::

    line_chart("Backlog", "events", {"amplitude": [(t0, 120), (t1, None), ...]},
               start=t0, end=t2)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence

from .markup import Markup, html, join

__all__ = ["PALETTE", "color_of", "line_chart", "short_number"]

# Colours told apart by most forms of colour blindness (Okabe and Ito).
PALETTE = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000")
WIDTH, HEIGHT = 460, 170
LEFT, RIGHT, TOP, BOTTOM = 48, 10, 10, 24  # the plot's margins, for the axes' labels

Series = Sequence[tuple[float, float | None]]  # (time, value); None: nothing known then


def color_of(index: int) -> str:
    """The colour of the ``index``-th destination (they are drawn in name order)."""
    return PALETTE[index % len(PALETTE)]


def short_number(value: float) -> str:
    """``0``, ``0.25``, ``12``, ``1.5k``, ``2M``: an axis label."""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}"


def _ceiling(value: float) -> float:
    """A round number at or above ``value``, for the top of an axis (1, 2 or 5 x 10^n)."""
    if value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 5, 10) if step * power >= value)


def line_chart(
    title: str,
    unit: str,
    series: Mapping[str, Series],
    *,
    start: float,
    end: float,
    metric: str,
) -> Markup:
    """A chart of one line per destination (in name order, coloured by ``color_of``), from
    ``start`` to ``end`` (Unix seconds, labelled in UTC); a value of None breaks a line."""
    values = [v for points in series.values() for _, v in points if v is not None]
    top = _ceiling(max(values, default=0.0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    span = max(end - start, 1.0)

    def x(t: float) -> float:
        return LEFT + (t - start) / span * plot_w

    def y(v: float) -> float:
        return TOP + plot_h - v / top * plot_h

    grid = join(
        html(
            '<line class="grid" x1="{}" x2="{}" y1="{}" y2="{}"/>'
            '<text class="axis" x="{}" y="{}" text-anchor="end">{}</text>',
            LEFT,
            WIDTH - RIGHT,
            f"{y(top * i / 4):.1f}",
            f"{y(top * i / 4):.1f}",
            LEFT - 4,
            f"{y(top * i / 4) + 4:.1f}",
            short_number(top * i / 4),
        )
        for i in range(5)
    )
    ticks = join(
        html(
            '<text class="axis" x="{}" y="{}" text-anchor="{}">{}</text>',
            f"{x(t):.1f}",
            HEIGHT - 6,
            anchor,
            _clock_label(t, span),
        )
        for t, anchor in ((start, "start"), ((start + end) / 2, "middle"), (end, "end"))
    )
    lines = join(
        _line(name, color_of(index), points, x, y, unit)
        for index, (name, points) in enumerate(sorted(series.items()))
    )
    return html(
        '<figure class="chart"><figcaption>{} <span class="unit">{}</span></figcaption>'
        '<svg viewBox="0 0 {} {}" role="img" aria-label="{}" data-metric="{}" data-total="{}"'
        ' data-max="{}">{}{}{}</svg></figure>',
        title,
        unit,
        WIDTH,
        HEIGHT,
        title,
        metric,
        f"{sum(values):g}",
        f"{max(values, default=0.0):g}",
        grid,
        ticks,
        lines,
    )


def _line(
    name: str,
    color: str,
    points: Series,
    x: Callable[[float], float],
    y: Callable[[float], float],
    unit: str,
) -> Markup:
    """One destination's line: a polyline per run of known values, and a dot at the last,
    with its value (shown on hover)."""
    runs: list[list[tuple[float, float]]] = [[]]
    for t, v in points:
        if v is None:
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append((t, v))
    polylines = join(
        html(
            '<polyline fill="none" stroke="{}" stroke-width="1.75" points="{}"/>',
            color,
            " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in run),
        )
        for run in runs
        if run
    )
    known = [point for run in runs for point in run]
    last = (
        html(
            '<circle cx="{}" cy="{}" r="2.5" fill="{}"><title>{} {}: {} {}</title></circle>',
            f"{x(known[-1][0]):.1f}",
            f"{y(known[-1][1]):.1f}",
            color,
            name,
            _clock_label(known[-1][0], 0),
            short_number(known[-1][1]),
            unit,
        )
        if known
        else ""
    )
    return html('<g class="series" data-destination="{}">{}{}</g>', name, polylines, last)


def _clock_label(t: float, span: float) -> str:
    """A time on the x axis, in UTC: with the day when the chart spans more than one."""
    fmt = "%a %H:%M" if span > 86400 else "%H:%M"
    return time.strftime(fmt, time.gmtime(t)) + ("" if span else " UTC")
