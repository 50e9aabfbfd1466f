# Minimal SVG line/scatter plots, written by hand (no matplotlib, no pip).
import math
from xml.sax.saxutils import escape

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
           "#e377c2", "#7f7f7f", "#17becf", "#bcbd22"]


def _nice_ticks(lo, hi, n=5):
    if hi <= lo:
        hi = lo + 1
    span = hi - lo
    step = 10 ** math.floor(math.log10(span / n))
    for m in (1, 2, 2.5, 5, 10):
        if span / (step * m) <= n:
            step *= m
            break
    first = math.ceil(lo / step) * step
    ticks = []
    t = first
    while t <= hi + 1e-9 * span:
        ticks.append(round(t, 10))
        t += step
    return ticks


def _fmt(v):
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e4 or a < 1e-2:
        exp = int(math.floor(math.log10(a)))
        mant = v / 10 ** exp
        return f"{mant:g}e{exp}" if mant != 1 else f"1e{exp}"
    return f"{v:g}"


class Plot:
    """One chart: series of (x, y) points drawn as lines and/or markers."""

    def __init__(self, title, xlabel, ylabel, width=640, height=400, logy=False):
        self.title, self.xlabel, self.ylabel = title, xlabel, ylabel
        self.w, self.h, self.logy = width, height, logy
        self.series = []   # dicts: name, pts, color, line, marker, dash, hollow
        self.hlines = []   # (y, label, color)
        self.ml, self.mr, self.mt, self.mb = 70, 20, 34, 50

    def add(self, name, pts, color=None, line=True, marker="circle", dash=None, hollow=False):
        pts = [(float(x), float(y)) for x, y in pts if y is not None and x is not None]
        if self.logy:
            pts = [(x, y) for x, y in pts if y > 0]
        color = color or PALETTE[len(self.series) % len(PALETTE)]
        self.series.append(dict(name=name, pts=pts, color=color, line=line, marker=marker,
                                dash=dash, hollow=hollow))

    def hline(self, y, label, color="#555"):
        self.hlines.append((float(y), label, color))

    def _ranges(self):
        xs = [x for s in self.series for x, _ in s["pts"]]
        ys = [y for s in self.series for _, y in s["pts"]] + [y for y, _, _ in self.hlines]
        if not xs:
            xs = [0, 1]
        if not ys:
            ys = [1, 10]
        x0, x1 = min(xs), max(xs)
        if x0 == x1:
            x0, x1 = x0 - 1, x1 + 1
        if self.logy:
            ys = [y for y in ys if y > 0] or [1, 10]
            y0 = 10 ** math.floor(math.log10(min(ys)))
            y1 = 10 ** math.ceil(math.log10(max(ys)))
            if y0 == y1:
                y1 = y0 * 10
        else:
            y0, y1 = min(0.0, min(ys)), max(ys) * 1.08
            if y1 <= y0:
                y1 = y0 + 1
        return x0, x1, y0, y1

    def render(self):
        # The legend sits right of the plot area, so it never hides data.
        lw = (max([len(s["name"]) for s in self.series] + [4]) * 6.2 + 34) if self.series else 0
        self.w_plot = self.w
        self.w = self.w + int(lw) + 10
        try:
            return self._render(lw)
        finally:
            self.w = self.w_plot

    def _render(self, lw):
        x0, x1, y0, y1 = self._ranges()
        pw, ph = self.w_plot - self.ml - self.mr, self.h - self.mt - self.mb

        def sx(x):
            return self.ml + (x - x0) / (x1 - x0) * pw

        def sy(y):
            if self.logy:
                f = (math.log10(y) - math.log10(y0)) / (math.log10(y1) - math.log10(y0))
            else:
                f = (y - y0) / (y1 - y0)
            return self.mt + ph - f * ph

        o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.w}" height="{self.h}" '
             f'viewBox="0 0 {self.w} {self.h}" font-family="sans-serif" font-size="11">',
             f'<rect width="{self.w}" height="{self.h}" fill="white"/>',
             f'<text x="{self.ml + (self.w_plot - self.ml - self.mr) / 2}" y="18" text-anchor="middle" font-size="13" '
             f'font-weight="bold">{escape(self.title)}</text>']
        # Grid and ticks.
        for t in _nice_ticks(x0, x1, 8):
            if x0 <= t <= x1:
                X = sx(t)
                o.append(f'<line x1="{X:.1f}" y1="{self.mt}" x2="{X:.1f}" y2="{self.mt + ph}" '
                         f'stroke="#eee"/>')
                o.append(f'<text x="{X:.1f}" y="{self.mt + ph + 14}" text-anchor="middle">'
                         f'{_fmt(t)}</text>')
        if self.logy:
            e = int(round(math.log10(y0)))
            while 10 ** e <= y1 * 1.0001:
                Y = sy(10 ** e)
                o.append(f'<line x1="{self.ml}" y1="{Y:.1f}" x2="{self.ml + pw}" y2="{Y:.1f}" '
                         f'stroke="#eee"/>')
                o.append(f'<text x="{self.ml - 4}" y="{Y + 4:.1f}" text-anchor="end">'
                         f'{_fmt(10 ** e)}</text>')
                e += 1
        else:
            for t in _nice_ticks(y0, y1, 6):
                if y0 <= t <= y1:
                    Y = sy(t)
                    o.append(f'<line x1="{self.ml}" y1="{Y:.1f}" x2="{self.ml + pw}" '
                             f'y2="{Y:.1f}" stroke="#eee"/>')
                    o.append(f'<text x="{self.ml - 4}" y="{Y + 4:.1f}" text-anchor="end">'
                             f'{_fmt(t)}</text>')
        o.append(f'<rect x="{self.ml}" y="{self.mt}" width="{pw}" height="{ph}" fill="none" '
                 f'stroke="#333"/>')
        o.append(f'<text x="{self.ml + pw / 2}" y="{self.h - 12}" text-anchor="middle">'
                 f'{escape(self.xlabel)}</text>')
        o.append(f'<text transform="translate(16,{self.mt + ph / 2}) rotate(-90)" '
                 f'text-anchor="middle">{escape(self.ylabel)}</text>')
        for y, label, color in self.hlines:
            if y0 <= y <= y1:
                Y = sy(y)
                o.append(f'<line x1="{self.ml}" y1="{Y:.1f}" x2="{self.ml + pw}" y2="{Y:.1f}" '
                         f'stroke="{color}" stroke-dasharray="2,3"/>')
                o.append(f'<text x="{self.ml + pw - 4}" y="{Y - 4:.1f}" text-anchor="end" '
                         f'fill="{color}">{escape(label)}</text>')
        for s in self.series:
            pts = [(sx(x), sy(y)) for x, y in s["pts"]]
            if s["line"] and len(pts) > 1:
                d = " ".join(f"{X:.1f},{Y:.1f}" for X, Y in pts)
                dash = f' stroke-dasharray="{s["dash"]}"' if s["dash"] else ""
                o.append(f'<polyline points="{d}" fill="none" stroke="{s["color"]}" '
                         f'stroke-width="1.6"{dash}/>')
            for X, Y in pts:
                o.append(self._marker(s["marker"], X, Y, s["color"], s["hollow"]))
        # Legend, right of the plot.
        lx, ly = self.ml + pw + 10 + lw, self.mt
        if self.series:
            o.append(f'<rect x="{lx - lw:.1f}" y="{ly - 2}" width="{lw:.1f}" '
                     f'height="{16 * len(self.series) + 4}" fill="white" fill-opacity="0.85" '
                     f'stroke="#ccc"/>')
        for i, s in enumerate(self.series):
            Y = ly + 8 + 16 * i
            X = lx - lw + 6
            dash = f' stroke-dasharray="{s["dash"]}"' if s["dash"] else ""
            if s["line"]:
                o.append(f'<line x1="{X}" y1="{Y}" x2="{X + 20}" y2="{Y}" stroke="{s["color"]}" '
                         f'stroke-width="1.6"{dash}/>')
            o.append(self._marker(s["marker"], X + 10, Y, s["color"], s["hollow"]))
            o.append(f'<text x="{X + 26}" y="{Y + 4}">{escape(s["name"])}</text>')
        o.append("</svg>")
        return "\n".join(o) + "\n"

    @staticmethod
    def _marker(kind, X, Y, color, hollow):
        fill = "white" if hollow else color
        if kind == "circle":
            return f'<circle cx="{X:.1f}" cy="{Y:.1f}" r="3.2" fill="{fill}" stroke="{color}"/>'
        if kind == "square":
            return (f'<rect x="{X - 3:.1f}" y="{Y - 3:.1f}" width="6" height="6" fill="{fill}" '
                    f'stroke="{color}"/>')
        if kind == "cross":
            return (f'<path d="M{X - 3.5:.1f},{Y - 3.5:.1f}L{X + 3.5:.1f},{Y + 3.5:.1f}'
                    f'M{X - 3.5:.1f},{Y + 3.5:.1f}L{X + 3.5:.1f},{Y - 3.5:.1f}" '
                    f'stroke="{color}" stroke-width="1.5"/>')
        if kind == "triangle":
            return (f'<path d="M{X:.1f},{Y - 4:.1f}L{X + 4:.1f},{Y + 3:.1f}L{X - 4:.1f},'
                    f'{Y + 3:.1f}Z" fill="{fill}" stroke="{color}"/>')
        return ""
