"""Plots drawn on the server as SVG: no JavaScript and no chart library, so the page stays
under a Content-Security-Policy that allows no scripts at all."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

WIDTH, HEIGHT = 720, 200
LEFT, RIGHT, TOP, BOTTOM = 44, 12, 26, 26


def _nice_ceiling(value: int) -> int:
    """The y axis' top: 1, 2 or 5 times a power of ten, at least `value` (at least 1)."""
    top = 1
    while True:
        for factor in (1, 2, 5):
            if top * factor >= value:
                return top * factor
        top *= 10


Series = Sequence[tuple[str, Sequence[int], str]]  # (name, a value per bucket, colour)


def bar_chart(title: str, labels: Sequence[str], series: Series) -> str:
    """An SVG bar chart: per bucket one bar of each series side by side (counts per bucket:
    a line would hide a series under another with the same counts)."""
    return _chart(title, labels, series, bars=True)


def line_chart(title: str, labels: Sequence[str], series: Series) -> str:
    """An SVG line chart: one polyline per series (levels over time, such as the queue)."""
    return _chart(title, labels, series, bars=False)


def _chart(title: str, labels: Sequence[str], series: Series, *, bars: bool) -> str:
    count = max(len(labels), 1)
    peak = _nice_ceiling(max((max(values, default=0) for _, values, _ in series), default=0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    slot = plot_w / count  # bars: each bucket's width

    def x(i: int) -> float:
        if bars:
            return LEFT + slot * (i + 0.5)
        return LEFT + (plot_w * i / (count - 1) if count > 1 else plot_w / 2)

    def y(v: int) -> float:
        return TOP + plot_h - plot_h * v / peak

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{escape(title)}">',
        f'<text x="{LEFT}" y="16" class="title">{escape(title)}</text>',
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{LEFT + plot_w}" y2="{TOP + plot_h}" '
        'stroke="#888"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}" stroke="#888"/>',
        f'<text x="{LEFT - 6}" y="{TOP + 4}" text-anchor="end">{peak}</text>',
        f'<text x="{LEFT - 6}" y="{TOP + plot_h}" text-anchor="end">0</text>',
    ]
    every = max(1, count // 6)
    for i in range(0, len(labels), every):
        parts.append(f'<text x="{x(i):.1f}" y="{HEIGHT - 8}" text-anchor="middle">'
                     f'{escape(labels[i])}</text>')
    legend_x = WIDTH - RIGHT
    width = slot * 0.8 / max(len(series), 1)
    for number, (name, values, colour) in enumerate(series):
        if bars:
            for i, v in enumerate(values):
                if v:
                    left = LEFT + slot * (i + 0.1) + width * number
                    parts.append(
                        f'<rect x="{left:.1f}" y="{y(v):.1f}" width="{width:.1f}" '
                        f'height="{TOP + plot_h - y(v):.1f}" fill="{colour}">'
                        f"<title>{escape(name)} {escape(labels[i] if i < len(labels) else '')}"
                        f": {v}</title></rect>")
            continue
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
                     f'points="{points}"><title>{escape(name)}</title></polyline>')
    for name, _, colour in reversed(series):
        legend_x -= 8 + 7 * len(name) + 14
        parts.append(f'<rect x="{legend_x}" y="8" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{legend_x + 14}" y="17">{escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)
