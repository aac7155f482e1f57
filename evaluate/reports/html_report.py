"""report.html: the run as a page for the people who decide a release, in one self-contained file.

The verdict and every check, the model rows side by side, per-class accuracy of the original and the converted
model (:mod:`evaluate.reports.charts`), each image's top-1 probability against the original's, the images whose
top-1 changed (against the original, and against a baseline run when one was given) with thumbnails and both
predictions by class name, the baseline comparison, and the provenance from report.json.

Why self-contained: the page is read where it is archived (a CI artefact, a mail, an air-gapped cluster), so it
loads nothing: no script, no font, no stylesheet from anywhere; figures are inline SVG and thumbnails ``data:``
URIs (read again from the images when the report is written, at most :data:`SHOWN` per list). Every string that
comes from a user, a file or a model (ids, class names, paths, commands) is escaped.
"""

from __future__ import annotations

import base64
import html
import io
import json
from typing import Callable

from . import charts

SHOWN = 50  # flipped images shown per list (all of them are in report.json / flipped.csv)
THUMB = 64  # thumbnail size in pixels (the longer side)
STATUS_COLOURS = {"pass": "#2e7d32", "fail": "#c62828", "not made": "#6d6d6d"}
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#222;max-width:1150px}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}h3{font-size:1.05em}
table{border-collapse:collapse;margin:8px 0;font-size:0.9em}td,th{border:1px solid #ddd;padding:3px 8px;
text-align:left;vertical-align:middle}th{background:#f3f3f3}.num{text-align:right;font-variant-numeric:tabular-nums}
.verdict{display:inline-block;color:#fff;padding:4px 14px;border-radius:4px;font-weight:bold}
.status{font-weight:bold}.figure svg{max-width:100%;height:auto}.muted{color:#666}code{font-size:0.9em}
img.thumb{image-rendering:auto;border:1px solid #ccc}
"""


def e(value) -> str:
    """Any value as escaped page text."""
    return html.escape("-" if value is None else str(value), quote=True)


def _num(v, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def _status(status: str) -> str:
    colour = STATUS_COLOURS.get(status, "#222")
    return f'<span class="status" style="color:{colour}">{e(status)}</span>'


def _table(header: list[str], rows: list[list[str]], numeric: set[int] = frozenset()) -> str:
    """A table of already escaped cells."""
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


class Thumbnails:
    """Each image's thumbnail as a ``data:`` URI, read again from its source once (``read_image(index)``: the
    decoded image); an image that cannot be read again (a streamed dataset, a file gone since) shows none."""

    def __init__(self, read_image: Callable | None):
        self.read_image = read_image
        self.made: dict[int, str] = {}

    def __call__(self, idx: int | None) -> str:
        if idx is None or self.read_image is None:
            return '<span class="muted">-</span>'
        if idx not in self.made:
            try:
                img = self.read_image(idx).convert("RGB")
                img.thumbnail((THUMB, THUMB))
                buf = io.BytesIO()
                img.save(buf, format="JPEG", quality=80)
                data = base64.b64encode(buf.getvalue()).decode("ascii")
                self.made[idx] = (f'<img class="thumb" src="data:image/jpeg;base64,{data}" width="{img.width}" '
                                  f'height="{img.height}" alt="">')
            except Exception:  # noqa: BLE001 - a thumbnail is an illustration: the report is written without it
                self.made[idx] = '<span class="muted">unreadable</span>'
        return self.made[idx]


def _class(names: list[str], c) -> str:
    name = names[c] if isinstance(c, int) and 0 <= c < len(names) else None
    return e(c) if name is None or name == str(c) else f"{e(name)} <span class=\"muted\">({e(c)})</span>"


def _more(total: int, where: str) -> str:
    return f'<p class="muted">... and {total - SHOWN} more ({e(where)})</p>' if total > SHOWN else ""


def _checks(record: dict) -> str:
    rows = [[e(c.get("name")), _status(c.get("status")), e(c.get("detail")), e(c.get("resolution") or "")]
            for c in record.get("checks") or []]
    return _table(["check", "status", "detail", "what it can detect here"], rows) if rows else \
        '<p class="muted">no checks were made</p>'


def _models(record: dict) -> str:
    rows = []
    for m in record.get("models") or []:
        agree = m.get("agreement_with_original")
        rows.append([e(m.get("name")), e(m.get("preprocessing")), _num(m.get("top1")), _num(m.get("top5")),
                     _num(None if agree is None else 100 * agree, ".3f"), _num(m.get("max_abs_logit_diff"), ".3g"),
                     _num(m.get("mcnemar_p"), ".3g")])
    return _table(["model", "preprocessing", "top-1 %", "top-5 %", "agreement with original %",
                   "max abs logit diff", "McNemar p"], rows, numeric={2, 3, 4, 5, 6})


def _flipped_vs_original(rows, image_ids, primary, reference, class_names, probs, thumb) -> str:
    flips = [(idx, label, top) for idx, label, top in rows if reference in top and top[primary][0] != top[reference][0]]
    if not flips:
        return f"<p>No image's top-1 differs between {e(primary)} and {e(reference)}.</p>"

    def pred(idx, top, row):
        p = (probs.get(idx) or {}).get(row)
        return _class(class_names, top[row][0]) + ("" if p is None else f' <span class="muted">p={p:.3f}</span>')

    body = [[thumb(idx), e(image_ids[idx]), _class(class_names, label), pred(idx, top, reference),
             pred(idx, top, primary)] for idx, label, top in flips[:SHOWN]]
    return (f"<p>{len(flips)} image(s) whose top-1 differs between {e(primary)} and {e(reference)}:</p>"
            + _table(["image", "id", "label", f"{reference} top-1", f"{primary} top-1"], body)
            + _more(len(flips), "all in report.json, top1_differs"))


def _baseline(section: dict, image_ids, class_names, thumb) -> str:
    s = section
    out = [f"<p>Baseline <code>{e(s.get('folder'))}</code> (its gate {e(s.get('baseline_gate'))}; command "
           f"<code>{e(s.get('command'))}</code>); {e(s.get('num_images'))} images compared.</p>"]
    rows = []
    for key in ("top1", "top5"):
        d = s.get(f"{key}_discordant") or {}
        rows.append([e(key.replace("top", "top-")) + " %", _num(s.get(f"baseline_{key}")), _num(s.get(key)),
                     _num(s.get(f"{key}_delta"), "+.3f"), _num(s.get(f"{key}_mcnemar_p"), ".3g"),
                     e(d.get("only_baseline_correct")), e(d.get("only_this_run_correct"))])
    out.append(_table(["", "baseline", "this run", "delta (points)", "McNemar p", "only baseline right",
                       "only this run right"], rows, numeric={1, 2, 3, 4, 5, 6}))
    flipped = s.get("flipped") or []
    index = {image_id: i for i, image_id in enumerate(image_ids)}
    if flipped:
        out.append(f"<p>{e(s.get('num_flipped'))} image(s) changed their top-1 ({e(s.get('row'))} row against the "
                   f"baseline's {e(s.get('baseline_row'))} row):</p>")
        out.append(_table(["image", "id", "label", "baseline top-1", "this run's top-1"], [
            [thumb(index.get(f["image_id"])), e(f["image_id"]), _class(class_names, f["label"]),
             _class(class_names, f["baseline_top1"]) + (" ✓" if f.get("baseline_correct") else ""),
             _class(class_names, f["top1"]) + (" ✓" if f.get("correct") else "")] for f in flipped[:SHOWN]]))
        out.append(_more(len(flipped), "all in flipped.csv"))
    else:
        out.append("<p>No image changed its top-1 against the baseline.</p>")
    diffs = s.get("environment_differences") or {}
    if diffs:
        out.append("<h3>What differs between the two runs' environments</h3>")
        out.append(_table(["fact", "baseline", "this run"],
                          [[e(k), e(v.get("baseline")), e(v.get("this_run"))] for k, v in diffs.items()]))
    return "".join(out)


def _flat(prefix: str, value, out: list) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out.append((prefix, value if not isinstance(value, (list, dict)) else json.dumps(value)))


def _provenance(record: dict) -> str:
    facts: list = []
    for key in ("model", "variant", "data", "layout", "subset", "seed", "subset_sha256", "num_samples", "precision",
                "devices", "world_size", "hardware", "pass_seconds", "images_per_second"):
        if key in record:
            _flat(key, record[key], facts)
    _flat("provenance", record.get("provenance") or {}, facts)
    _flat("versions", record.get("versions") or {}, facts)
    return _table(["fact", "value"], [[e(k), f"<code>{e(v)}</code>"] for k, v in facts])


def model_section(record: dict, results: dict, image_ids, primary: str, reference: str | None,
                  class_names: list[str], read_image: Callable | None = None, heading: str | None = None) -> str:
    """One model's part of the page (``heading``: its name in a job of several models)."""
    thumb = Thumbnails(read_image)
    rows, probs = results["rows"], results.get("top1_prob") or {}
    counts = [0] * len(class_names)
    for _, label, _ in rows:
        if 0 <= label < len(counts):
            counts[label] += 1
    per_class = {name: list(m.per_class) for name, m in results["models"].items()}
    h = "h2" if heading is None else "h3"
    out = [f'<section><h2>{e(heading)}</h2>' if heading else "<section>",
           f'<p><span class="verdict" style="background:{STATUS_COLOURS.get(record.get("gate"), "#222")}">GATE: '
           f'{e(str(record.get("gate")).upper())}</span> &nbsp;{e(record.get("num_samples"))} images, top-1 '
           f'{_num(record.get("top1"))}%</p>', _models(record),
           f"<{h}>Gate checks</{h}>", _checks(record),
           f"<{h}>Per-class accuracy</{h}>", f'<div class="figure" id="per-class">'
           f'{charts.per_class_chart(class_names, counts, per_class, reference)}</div>']
    if reference is not None and rows:
        out += [f"<{h}>Top-1 probability against the original, per image</{h}>",
                '<div class="figure" id="probability">' + charts.probability_scatter(rows, probs, reference) + "</div>",
                f"<{h}>Images whose top-1 changed against the original</{h}>",
                _flipped_vs_original(rows, image_ids, primary, reference, class_names, probs, thumb)]
    if record.get("baseline"):
        out += [f"<{h}>Compared with the baseline</{h}>", _baseline(record["baseline"], image_ids, class_names, thumb)]
    if record.get("bad_images"):
        out += [f"<{h}>Skipped bad images</{h}>", "<ul>" + "".join(f"<li>{e(m)}</li>" for m in
                                                                  record["bad_images"][:SHOWN]) + "</ul>"]
    out += [f"<{h}>Provenance</{h}>", _provenance(record), "</section>"]
    return "\n".join(out)


def page(title: str, sections: list[str]) -> str:
    """The whole page around its sections: no script, nothing loaded from anywhere (the policy says so too)."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
            "style-src 'unsafe-inline'\">"
            f"<meta name=\"viewport\" content=\"width=device-width\"><title>{e(title)}</title><style>{CSS}</style>"
            f"</head><body><h1>{e(title)}</h1>\n" + "\n".join(sections) + "\n</body></html>\n")


def report_html(record: dict, results: dict, image_ids, primary: str, reference: str | None,
                class_names: list[str], read_image: Callable | None = None) -> str:
    """One model's report.html."""
    return page(f"Evaluation of {record.get('model')}",
                [model_section(record, results, image_ids, primary, reference, class_names, read_image)])
