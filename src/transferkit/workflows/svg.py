"""Small inline-SVG charts for the HTML report: lines, scatter, a heatmap and a reliability diagram.

Plain strings, no dependency and no script: every chart scales to its container (``viewBox``) and prints as it
shows. Colours come from one palette so a series keeps its colour across the charts of a page.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
W, H = 480, 300
LEFT, RIGHT, TOP, BOTTOM = 58, 16, 30, 46


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi]."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 2.5, 5, 10) if step * m >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + k * step, 10) for k in range(int((hi - first) / step + 1e-9) + 1)]


def _fmt(v: float) -> str:
    return f"{v:g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.1e}"


class _Axes:
    """Maps data to pixels and draws the frame, ticks and labels."""

    def __init__(self, x: Sequence[float], y: Sequence[float], x_label: str, y_label: str, title: str,
                 y_range: tuple[float, float] | None = None, x_range: tuple[float, float] | None = None) -> None:
        self.x0, self.x1 = x_range or (min(x), max(x))
        self.y0, self.y1 = y_range or (min(y), max(y))
        if self.x1 <= self.x0:
            self.x0, self.x1 = self.x0 - 0.5, self.x1 + 0.5
        if self.y1 <= self.y0:
            self.y0, self.y1 = self.y0 - 0.5, self.y1 + 0.5
        if y_range is None:  # a little room above and below the data
            pad = 0.05 * (self.y1 - self.y0)
            self.y0, self.y1 = self.y0 - pad, self.y1 + pad
        self.labels, self.title = (x_label, y_label), title

    def px(self, x: float) -> float:
        return LEFT + (x - self.x0) / (self.x1 - self.x0) * (W - LEFT - RIGHT)

    def py(self, y: float) -> float:
        return H - BOTTOM - (y - self.y0) / (self.y1 - self.y0) * (H - TOP - BOTTOM)

    def frame(self) -> list[str]:
        out = [f'<rect x="{LEFT}" y="{TOP}" width="{W - LEFT - RIGHT}" height="{H - TOP - BOTTOM}" fill="none" '
               'stroke="#999"/>',
               f'<text x="{W / 2}" y="18" text-anchor="middle" font-weight="bold">{escape(self.title)}</text>',
               f'<text x="{(LEFT + W - RIGHT) / 2}" y="{H - 8}" text-anchor="middle">{escape(self.labels[0])}</text>',
               f'<text transform="translate(14 {(TOP + H - BOTTOM) / 2}) rotate(-90)" text-anchor="middle">'
               f"{escape(self.labels[1])}</text>"]
        for t in _ticks(self.x0, self.x1):
            x = self.px(t)
            out.append(f'<line x1="{x:.1f}" y1="{H - BOTTOM}" x2="{x:.1f}" y2="{H - BOTTOM + 4}" stroke="#999"/>'
                       f'<text x="{x:.1f}" y="{H - BOTTOM + 16}" text-anchor="middle">{_fmt(t)}</text>')
        for t in _ticks(self.y0, self.y1):
            y = self.py(t)
            out.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{W - RIGHT}" y2="{y:.1f}" stroke="#eee"/>'
                       f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
        return out


def _svg(body: list[str], label: str, width: int = W, height: int = H) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="{escape(label)}" font-family="sans-serif" font-size="11">' + "".join(body) + "</svg>")


def _legend(names: Sequence[str]) -> list[str]:
    out = []
    for k, name in enumerate(names):
        y = TOP + 8 + 14 * k
        out.append(f'<rect x="{W - RIGHT - 150}" y="{y - 8}" width="10" height="10" fill="{PALETTE[k % 8]}"/>'
                   f'<text x="{W - RIGHT - 136}" y="{y + 1}">{escape(name)}</text>')
    return out


def line_chart(series: Sequence[tuple[str, Sequence[float], Sequence[float]]], *, title: str, x_label: str,
               y_label: str, marks: Sequence[tuple[float, float, str]] = (),
               y_range: tuple[float, float] | None = None) -> str:
    """Lines with points; ``marks`` are (x, y, label) circled on the chart (e.g. the best epoch)."""
    xs = [x for _, sx, _ in series for x in sx]
    ys = [y for _, _, sy in series for y in sy if math.isfinite(y)]
    ax = _Axes(xs or [0, 1], ys or [0, 1], x_label, y_label, title, y_range)
    body = ax.frame()
    for k, (_, sx, sy) in enumerate(series):
        pts = [(ax.px(x), ax.py(y)) for x, y in zip(sx, sy, strict=True) if math.isfinite(y)]
        colour = PALETTE[k % 8]
        if len(pts) > 1:
            body.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="'
                        + " ".join(f"{x:.1f},{y:.1f}" for x, y in pts) + '"/>')
        body += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour}"/>' for x, y in pts]
    for x, y, label in marks:
        body.append(f'<circle cx="{ax.px(x):.1f}" cy="{ax.py(y):.1f}" r="7" fill="none" stroke="#000" '
                    f'stroke-width="1.5"/><text x="{ax.px(x) + 9:.1f}" y="{ax.py(y) - 8:.1f}">{escape(label)}</text>')
    body += _legend([name for name, _, _ in series])
    return _svg(body, title)


def scatter(points: Sequence[tuple[float, float, str]], *, title: str, x_label: str, y_label: str,
            log_x: bool = False, diagonal: bool = False) -> str:
    """Points, each labelled unless its label is empty (then small and in one colour); ``log_x`` plots log10 of x
    (ticks then read as powers of ten); ``diagonal`` draws y = x (predicted against true)."""
    fx = (lambda v: math.log10(max(v, 1e-12))) if log_x else (lambda v: v)
    xs, ys = [fx(p[0]) for p in points], [p[1] for p in points]
    both = (min(xs + ys), max(xs + ys))
    ax = _Axes(xs, ys, x_label + (" (log10)" if log_x else ""), y_label, title,
               y_range=both if diagonal else None, x_range=both if diagonal else None)
    body = ax.frame()
    if diagonal:
        body.append(f'<line x1="{ax.px(both[0]):.1f}" y1="{ax.py(both[0]):.1f}" x2="{ax.px(both[1]):.1f}" '
                    f'y2="{ax.py(both[1]):.1f}" stroke="#999" stroke-dasharray="4 3"/>')
    for k, ((_, y, label), x) in enumerate(zip(points, xs, strict=True)):
        if not label:
            body.append(f'<circle cx="{ax.px(x):.1f}" cy="{ax.py(y):.1f}" r="2" fill="{PALETTE[0]}" '
                        'fill-opacity="0.5"/>')
            continue
        body.append(f'<circle cx="{ax.px(x):.1f}" cy="{ax.py(y):.1f}" r="5" fill="{PALETTE[k % 8]}"/>'
                    f'<text x="{ax.px(x) + 7:.1f}" y="{ax.py(y) - 6:.1f}">{escape(label)}</text>')
    return _svg(body, title)


def heatmap(matrix: Sequence[Sequence[float]], labels: Sequence[str], *, title: str) -> str:
    """A row-normalised confusion matrix: rows true class, columns predicted, each cell its share of the row."""
    n = len(labels)
    cell = max(18, min(44, 440 // max(n, 1)))
    left, top = 96, 40
    size = (left + n * cell + 12, top + n * cell + 70)
    body = [f'<text x="{size[0] / 2}" y="16" text-anchor="middle" font-weight="bold">{escape(title)}</text>',
            f'<text x="{left + n * cell / 2}" y="{size[1] - 6}" text-anchor="middle">predicted</text>',
            f'<text transform="translate(12 {top + n * cell / 2}) rotate(-90)" text-anchor="middle">true</text>']
    for i, row in enumerate(matrix):
        total = sum(row) or 1
        body.append(f'<text x="{left - 4}" y="{top + i * cell + cell / 2 + 4}" text-anchor="end">'
                    f"{escape(labels[i][:14])}</text>")
        for j, v in enumerate(row):
            share = v / total
            shade = int(255 - 200 * share)
            fill = f"rgb({shade},{shade},255)"
            body.append(f'<rect x="{left + j * cell}" y="{top + i * cell}" width="{cell}" height="{cell}" '
                        f'fill="{fill}" stroke="#fff"><title>{escape(labels[i])} as {escape(labels[j])}: '
                        f"{int(v)}</title></rect>")
            if cell >= 24 and share > 0:
                colour = "#fff" if share > 0.6 else "#000"
                body.append(f'<text x="{left + j * cell + cell / 2}" y="{top + i * cell + cell / 2 + 4}" '
                            f'text-anchor="middle" fill="{colour}" font-size="10">{round(100 * share)}</text>')
    for j in range(n):
        x, y = left + j * cell + cell / 2, top + n * cell + 8
        body.append(f'<text transform="translate({x} {y}) rotate(45)" font-size="10">{escape(labels[j][:14])}</text>')
    return _svg(body, title, *size)


def reliability(bins: Sequence[dict[str, float]], *, title: str) -> str:
    """Accuracy against confidence per bin (bars) with the diagonal a calibrated model would follow."""
    ax = _Axes([0, 1], [0, 1], "confidence", "accuracy", title, y_range=(0, 1), x_range=(0, 1))
    body = ax.frame()
    body.append(f'<line x1="{ax.px(0)}" y1="{ax.py(0)}" x2="{ax.px(1)}" y2="{ax.py(1)}" stroke="#999" '
                'stroke-dasharray="4 3"/>')
    for b in bins:
        x0, x1 = ax.px(b["low"]), ax.px(b["high"])
        y = ax.py(b["accuracy"])
        body.append(f'<rect x="{x0 + 1:.1f}" y="{y:.1f}" width="{x1 - x0 - 2:.1f}" height="{ax.py(0) - y:.1f}" '
                    f'fill="{PALETTE[0]}" fill-opacity="0.75"><title>{b["items"]} items: confidence '
                    f'{b["confidence"]:.2f}, accuracy {b["accuracy"]:.2f}</title></rect>')
    return _svg(body, title)


def bars(
    values: Sequence[tuple[str, float]], *, title: str, x_label: str, x_range: tuple[float, float] = (0, 1)
) -> str:
    """One horizontal bar per (name, value), values on a shared axis."""
    height = TOP + 26 * len(values) + BOTTOM
    left = 150
    span = x_range[1] - x_range[0] or 1.0

    def px(v: float) -> float:
        return left + (v - x_range[0]) / span * (W - left - RIGHT)

    body = [f'<text x="{W / 2}" y="18" text-anchor="middle" font-weight="bold">{escape(title)}</text>',
            f'<text x="{(left + W - RIGHT) / 2}" y="{height - 8}" text-anchor="middle">{escape(x_label)}</text>']
    for t in _ticks(*x_range):
        body.append(f'<line x1="{px(t):.1f}" y1="{TOP}" x2="{px(t):.1f}" y2="{height - BOTTOM}" stroke="#eee"/>'
                    f'<text x="{px(t):.1f}" y="{height - BOTTOM + 16}" text-anchor="middle">{_fmt(t)}</text>')
    for k, (name, v) in enumerate(values):
        y = TOP + 26 * k
        body.append(f'<text x="{left - 6}" y="{y + 15}" text-anchor="end">{escape(name[:24])}</text>'
                    f'<rect x="{left}" y="{y + 3}" width="{max(px(v) - left, 0.5):.1f}" height="18" '
                    f'fill="{PALETTE[k % 8]}"><title>{escape(name)}: {v:.4g}</title></rect>'
                    f'<text x="{px(v) + 4:.1f}" y="{y + 16}" font-size="10">{v:.3f}</text>')
    return _svg(body, title, W, height)
