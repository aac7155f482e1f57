"""report.html's figures as inline SVG, drawn with matplotlib: per-class accuracy of every model row, and each
image's top-1 probability in the converted rows against the original's.

Why SVG from matplotlib's ``Figure`` (no pyplot): the page must load nothing from anywhere, so a figure is text
inside the page; text is drawn as paths (``svg.fonttype`` ``path``: no font to fetch); no global backend is chosen,
so a caller's own matplotlib setup is left alone. matplotlib is imported here, when a report is written, not when
``python -m evaluate --help`` starts. Where a figure would hold thousands of points they are rasterized (a PNG
inside the SVG) so that a 50,000-image run does not make a page of 50,000 SVG circles.
"""

from __future__ import annotations

import io
import re

RASTERIZE_ABOVE = 2000  # points in a scatter drawn as one embedded PNG rather than one SVG element each
BARS_UP_TO = 30  # classes drawn as grouped bars; more are a scatter against the original (or sorted lines)
COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974")
FLIP_COLOUR = "#c44e52"


def _svg(fig, salt: str) -> str:
    """The figure as an ``<svg>`` element for an HTML page: without the XML prolog and the metadata block (which
    names its RDF vocabularies by URL), ids salted per figure so that two figures of one page never share one."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": salt}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    return re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return fig, fig.add_subplot()


def _short(name: str, n: int = 18) -> str:
    return name if len(name) <= n else name[: n - 1] + "…"


def per_class_chart(class_names: list[str], counts: list[int], per_class: dict[str, list[float]],
                    reference: str | None) -> str:
    """Per-class top-1 accuracy (%) of every model row over the classes that have images: grouped bars for a few
    classes; for many, each row's class accuracy against the original's (points off the diagonal are classes the
    conversion changed), or without an original each row's accuracies sorted."""
    classes = [c for c, n in enumerate(counts) if n]
    rows = list(per_class)
    if len(classes) <= BARS_UP_TO:
        fig, ax = _figure(max(6.0, 0.22 * len(classes) * max(len(rows), 1) + 2), 3.6)
        width = 0.8 / max(len(rows), 1)
        for r, row in enumerate(rows):
            ax.bar([i + (r - (len(rows) - 1) / 2) * width for i in range(len(classes))],
                   [per_class[row][c] for c in classes], width, label=row, color=COLOURS[r % len(COLOURS)])
        ax.set_xticks(range(len(classes)), [_short(class_names[c]) for c in classes],
                      rotation=45 if len(classes) > 10 else 0, ha="right" if len(classes) > 10 else "center")
        ax.set_xlabel("class")
    elif reference is not None and reference in per_class:
        fig, ax = _figure(6.0, 5.0)
        ax.plot([0, 100], [0, 100], color="#999999", linewidth=0.8, zorder=0)
        for r, row in enumerate(rows):
            if row == reference:
                continue
            ax.scatter([per_class[reference][c] for c in classes], [per_class[row][c] for c in classes], s=10,
                       alpha=0.6, label=row, color=COLOURS[r % len(COLOURS)],
                       rasterized=len(classes) > RASTERIZE_ABOVE)
        ax.set_xlabel(f"{reference}: class top-1 %")
    else:
        fig, ax = _figure(8.0, 3.6)
        for r, row in enumerate(rows):
            ax.plot(sorted(per_class[row][c] for c in classes), label=row, color=COLOURS[r % len(COLOURS)])
        ax.set_xlabel(f"classes, sorted by accuracy ({len(classes)})")
    ax.set_ylabel("top-1 % (per class)")
    ax.set_ylim(-2, 102)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _svg(fig, "per-class")


def probability_scatter(rows, top1_prob: dict, reference: str) -> str:
    """For every image and every row but the original: the row's top-1 probability minus the original's (y) against
    the original's (x); images whose top-1 differs from the original's are drawn as crosses."""
    names = list(rows[0][2]) if rows else []  # the rows in the pass's order: each keeps its per-class chart colour
    others = [name for name in names if name != reference]
    fig, ax = _figure(8.0, 4.2)
    ax.axhline(0, color="#999999", linewidth=0.8, zorder=0)
    for r, row in enumerate(others):
        same, flipped = ([], []), ([], [])
        for idx, _, top in rows:
            p = top1_prob.get(idx)
            if p is None or reference not in top:  # the original ran on a sample (--reference-sample)
                continue
            into = flipped if top[row][0] != top[reference][0] else same
            into[0].append(p[reference])
            into[1].append(p[row] - p[reference])
        colour = COLOURS[names.index(row) % len(COLOURS)]
        ax.scatter(*same, s=8, alpha=0.5, color=colour, label=f"{row} (same top-1)",
                   rasterized=len(same[0]) > RASTERIZE_ABOVE)
        if flipped[0]:
            ax.scatter(*flipped, s=36, marker="x", color=FLIP_COLOUR if r == 0 else colour,
                       label=f"{row} (top-1 differs: {len(flipped[0])})")
    ax.set_xlabel(f"{reference}: probability of its top-1 class")
    ax.set_ylabel("top-1 probability minus the original's")
    ax.set_xlim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return _svg(fig, "probability")
