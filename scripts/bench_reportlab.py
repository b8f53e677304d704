#!/usr/bin/env python3
"""The render benchmark's Python side: the same synthetic table as
`local bench-render` (8 columns, the same values and Unicode names), drawn
with reportlab's canvas (its fastest path) in the same layout: A4
landscape, a header on every page, column headers, alternating row fills,
numbers right-aligned and fitted to their column, a totals line, "Page X of
Y", DejaVu Sans with Droid Sans Fallback for CJK, fonts embedded (subset).

    python3 -m venv .venv/reportlab && .venv/reportlab/bin/pip install reportlab==5.1.0
    .venv/reportlab/bin/python scripts/bench_reportlab.py 10000 [OUT.pdf]

Prints wall time and peak RSS, as the Rust benchmark does.
"""
import resource
import sys
import time
from pathlib import Path

from reportlab.lib.pagesizes import A4, landscape
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen import canvas

FONTS = Path(__file__).resolve().parent.parent / "shared" / "assets" / "fonts"
CITIES = ["Zürich", "Łódź", "東京", "Αθήνα", "Lisbon", "Москва", "São Paulo", "Reykjavík"]
COLUMNS = [("City", "s"), ("Product", "s"), ("Quantity", "i"), ("Unit price", "d"),
           ("Total", "d"), ("Ordered at", "s"), ("Paid", "s"), ("Notes", "s")]
PAGE_W, PAGE_H = landscape(A4)
MARGIN, ROW_H, HEADER_H, FOOTER_H, PAD, SIZE = 36.0, 14.0, 64.0, 24.0, 3.0, 8.5
AVAIL = PAGE_W - 2 * MARGIN


def rows(n):
    for i in range(n):
        unit = (i % 1000) / 10.0 + 0.99
        qty = i % 50 + 1
        yield [CITIES[i % len(CITIES)], f"Product {i % 977:05}", qty, unit, qty * unit,
               "2026-11-25 19:42 CET", "Yes" if i % 3 else "No",
               f"Delivered to warehouse {i % 17} after a short delay in customs, signed by the night shift"]


def fmt(v, kind):
    if kind == "i":
        return f"{v:,}"
    if kind == "d":
        return f"{v:,.2f}"
    return v


def face(text, bold):
    if any(ord(c) >= 0x3000 for c in text):
        return "Fallback"
    return "Bold" if bold else "Regular"


def fit(text, font, max_w):
    if pdfmetrics.stringWidth(text, font, SIZE) <= max_w:
        return text
    budget = max_w - pdfmetrics.stringWidth("…", font, SIZE)
    out = ""
    for c in text:
        if pdfmetrics.stringWidth(out + c, font, SIZE) > budget:
            break
        out += c
    return out + "…"


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    out = sys.argv[2] if len(sys.argv) > 2 else "/dev/null"
    pdfmetrics.registerFont(TTFont("Regular", str(FONTS / "DejaVuSans.ttf")))
    pdfmetrics.registerFont(TTFont("Bold", str(FONTS / "DejaVuSans-Bold.ttf")))
    pdfmetrics.registerFont(TTFont("Fallback", str(FONTS / "DroidSansFallback.ttf")))
    started = time.perf_counter()
    data = list(rows(n))
    totals = [None, None, sum(r[2] for r in data), sum(r[3] for r in data), sum(r[4] for r in data),
              None, None, None]
    # Column widths from the header and the first 1,000 rows, shared out over the page.
    natural = []
    for i, (name, kind) in enumerate(COLUMNS):
        w = pdfmetrics.stringWidth(name, "Bold", SIZE)
        for r in data[:1000]:
            w = max(w, pdfmetrics.stringWidth(str(fmt(r[i], kind)), "Regular", SIZE))
        natural.append(min(max(w + 2 * PAD, 40.0), AVAIL / 2))
    scale = AVAIL / sum(natural)
    widths = [w * scale for w in natural]
    per_page = int((PAGE_H - 2 * MARGIN - HEADER_H - FOOTER_H - ROW_H) // ROW_H)
    lines = data + [["Total", "", *[fmt(t, k) if t is not None else "" for t, (_, k) in zip(totals[2:], COLUMNS[2:])]]]
    pages = max(1, -(-len(lines) // per_page))
    c = canvas.Canvas(out, pagesize=(PAGE_W, PAGE_H), pageCompression=1)
    c.setTitle("Benchmark report")

    def row(y, cells, bold):
        x = MARGIN
        for (kind, w, cell) in zip([k for _, k in COLUMNS], widths, cells):
            text = str(fmt(cell, kind)) if not isinstance(cell, str) else cell
            font = face(text, bold)
            text = fit(text, font, w - 2 * PAD)
            c.setFont(font, SIZE)
            if kind in "id":
                c.drawRightString(x + w - PAD, y - ROW_H + 4, text)
            else:
                c.drawString(x + PAD, y - ROW_H + 4, text)
            x += w

    for p in range(pages):
        top = PAGE_H - MARGIN
        c.setFont("Bold", 15)
        c.drawString(MARGIN, top - 16, "Benchmark report")
        c.setFont("Regular", SIZE)
        c.drawString(MARGIN, top - 32, "Generated 2026-11-27 16:43 CET (Europe/Zurich)   ·   Execution bench")
        c.drawString(MARGIN, top - 46, "Parameters   region: EMEA")
        y = top - HEADER_H
        c.setFillGray(0.85)
        c.rect(MARGIN, y - ROW_H, AVAIL, ROW_H, stroke=0, fill=1)
        c.setFillGray(0)
        row(y, [n for n, _ in COLUMNS], True)
        y -= ROW_H
        for i, r in enumerate(lines[p * per_page:(p + 1) * per_page]):
            if i % 2 == 1:
                c.setFillGray(0.95)
                c.rect(MARGIN, y - ROW_H, AVAIL, ROW_H, stroke=0, fill=1)
                c.setFillGray(0)
            row(y, r, r is lines[-1])
            y -= ROW_H
        c.setFont("Regular", 8)
        c.drawString(MARGIN, MARGIN, "Benchmark report")
        c.drawRightString(PAGE_W - MARGIN, MARGIN, f"Page {p + 1} of {pages}")
        c.showPage()
    c.save()
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"reportlab: {n} rows x 8 columns, {pages} pages")
    print(f"  PDF (wall, data included) {elapsed * 1000:.0f} ms")
    print(f"  peak RSS                  {peak:.1f} MiB")


if __name__ == "__main__":
    main()
