"""Server-side SVG plots of a drift monitor (the console's Drift page): its history in
buckets of runs, the reference band it is compared with, and where the recent window
starts, so a person sees the shift. Plain SVG markup, every text escaped; no script."""

from __future__ import annotations

from html import escape

from keel.drift.report import Series

W, H, PAD = 640, 180, 32
COLORS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563")


def plot(series: Series, title: str) -> str:
    """The monitor's plot as an `<svg>` element."""
    points = series.points
    if not points:
        return _frame(title, '<text x="50%" y="50%" text-anchor="middle">no observations</text>')
    keys = sorted({k for _, values in points for k in values} | set(series.band))
    lows = [v for _, values in points for v in values.values()]
    lows += [x for band in series.band.values() for x in band]
    lo, hi = min(lows), max(lows)
    if series.monitor.kind in ("distribution", "approval_rate"):
        lo, hi = min(lo, 0.0), max(hi, 1.0)  # shares and rates: the whole 0..1
    span = (hi - lo) or 1.0

    def x(i: int) -> float:
        return PAD + (W - 2 * PAD) * (i / max(1, len(points) - 1))

    def y(v: float) -> float:
        return H - PAD - (H - 2 * PAD) * ((v - lo) / span)

    parts = []
    for n, key in enumerate(keys):
        color = COLORS[n % len(COLORS)]
        band = series.band.get(key)
        if band is not None:
            top, bottom = y(band[1]), y(band[0])
            if bottom - top < 1:  # a category's reference share: a dashed line
                parts.append(
                    f'<line class="band" x1="{PAD}" x2="{W - PAD}" y1="{top:.1f}" y2="{top:.1f}"'
                    f' stroke="{color}" stroke-dasharray="4 3" stroke-opacity="0.7"/>'
                )
            else:
                parts.append(
                    f'<rect class="band" x="{PAD}" y="{top:.1f}" width="{W - 2 * PAD}"'
                    f' height="{bottom - top:.1f}" fill="{color}" fill-opacity="0.12"/>'
                )
        line = " ".join(
            f"{x(i):.1f},{y(values[key]):.1f}"
            for i, (_, values) in enumerate(points)
            if key in values
        )
        parts.append(
            f'<polyline class="series" data-key="{escape(key)}" points="{line}" fill="none"'
            f' stroke="{color}" stroke-width="2"/>'
        )
        if key != "value":
            parts.append(
                f'<text x="{W - PAD + 4}" y="{PAD + 12 * n}" font-size="10"'
                f' fill="{color}">{escape(key)}</text>'
            )
    if series.recent_from is not None:
        first = next((i for i, (at, _) in enumerate(points) if at >= series.recent_from), None)
        if first is not None:
            parts.append(
                f'<line class="recent" x1="{x(first):.1f}" x2="{x(first):.1f}" y1="{PAD}"'
                f' y2="{H - PAD}" stroke="#111827" stroke-dasharray="2 2"/>'
                f'<text x="{x(first) + 3:.1f}" y="{PAD - 4}" font-size="10">recent window</text>'
            )
    parts.append(
        f'<text x="4" y="{y(hi) + 4:.1f}" font-size="10">{hi:.3g}</text>'
        f'<text x="4" y="{y(lo):.1f}" font-size="10">{lo:.3g}</text>'
    )
    return _frame(title, "".join(parts))


def _frame(title: str, body: str) -> str:
    return (
        f'<svg class="drift-plot" role="img" viewBox="0 0 {W + 80} {H}" width="{W + 80}"'
        f' height="{H}" xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>'
        f'<rect x="{PAD}" y="{PAD}" width="{W - 2 * PAD}" height="{H - 2 * PAD}" fill="none"'
        f' stroke="#d1d5db"/>{body}</svg>'
    )
