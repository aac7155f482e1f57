"""A run compared with an earlier run's reports (``report.baseline``; ``--baseline DIR``): which images changed
their top-1 since then, from what to what, the top-1/top-5 deltas with an exact McNemar test, and what differs
between the two runs' environments.

Why an earlier run's files and not a model: the question is "did this upgrade (torch, transformers, CUDA, bf16,
sdpa, compile, a new node type, re-converted weights) change a prediction since the run we kept?". That run's
``predictions.csv`` holds, per image, its label and the primary row's top-5, which is all a paired comparison
needs, and its ``report.json`` holds the sha256 of its ordered image list and its environment.

When each part happens (every failure that can be found before the first batch is found before it):

1. :func:`read_baseline`, before any model or data is loaded: the folder, ``report.json`` and
   ``predictions.csv`` must exist and parse (else a one-line :class:`~evaluate.plan.PlanError` naming the file).
2. :func:`check_same_images`, once the image list is known (after the data is prepared, before any model is
   loaded): the two runs must cover the same ordered image list (``subset_sha256``), else one line naming both
   hashes and how to evaluate the baseline's list; and :func:`check_same_labels`: an id is a file name or
   ``row-<i>``, so the same ids can name other images (the same parquet rows shuffled): every image must carry the
   baseline's label, else one line naming the data each run read.
3. :func:`compare`, after the pass, on the rows gathered from every rank: the primary row of this run against the
   baseline's primary row (with ``preprocessing both``, the first mode's row, as predictions.csv holds it). Images
   are paired by content too: predictions.csv records the sha256 of the bytes each image was decoded from (the
   ``sha256`` column; a pixel cache keeps the hashes of the bytes it decoded), and an image whose bytes differ from
   the baseline's under the same id is refused (exit 2), since its predictions are not comparable. The bytes are
   only known once read, so this is found after the pass (before it with nothing to read: a label differs first).
   A baseline written before the column existed, or an image whose bytes were not read (a decoded dataset cell),
   is paired by id and label only.

The gate's ``baseline`` check (:func:`evaluate.verdict.gate.baseline_check`) turns the comparison into pass or fail.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from cvt_port.provenance import ENVIRONMENT_KEYS

from ..plan import PlanError
from .stats import mcnemar_exact

BASELINE_FILES = ("report.json", "predictions.csv")
FLIPPED_FILE = "flipped.csv"
CONTENT_COLUMN = "sha256"  # predictions.csv's last column: the sha256 of the bytes each image was decoded from
FLIPPED_COLUMNS = ("image_id", "label", "baseline_top1", "top1", "baseline_correct", "correct")
SHOWN = 20  # flipped images listed in report.md and the terminal (all of them are in flipped.csv and report.json)
_WHAT = "give the report.output folder of an earlier run (it holds report.json and predictions.csv)"


@dataclass(frozen=True)
class Baseline:
    """An earlier run's reports: its record, its per-image label and top-k (image id -> (label, top-k)),
    the sha256 of the files read, and each image's content hash (image id -> sha256 of its bytes, where recorded)."""

    folder: Path
    record: dict
    predictions: dict[str, tuple[int, tuple[int, ...]]]
    sha256: dict[str, str]
    content: dict[str, str] = field(default_factory=dict)


def read_baseline(folder: str | Path) -> Baseline:
    """Read and check an earlier run's ``report.json`` and ``predictions.csv`` (nothing else is needed)."""
    folder = Path(folder)
    if not folder.is_dir():
        problem = "is not a folder" if folder.exists() else "no such folder"
        raise PlanError("report.baseline", f"{problem}; {_WHAT}", folder)
    raw = {}
    for name in BASELINE_FILES:
        path = folder / name
        try:
            raw[name] = path.read_bytes()
        except FileNotFoundError:
            raise PlanError("report.baseline", f"no such file; {_WHAT}", path) from None
        except OSError as exc:
            raise PlanError("report.baseline", f"cannot be read ({exc.strerror or type(exc).__name__}); {_WHAT}",
                            path) from None
    path = folder / "report.json"
    try:
        record = json.loads(raw["report.json"].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PlanError("report.baseline", f"is not valid JSON ({getattr(exc, 'msg', None) or exc.reason}); {_WHAT}",
                        path) from None
    if not isinstance(record, dict) or not isinstance(record.get("subset_sha256"), str):
        raise PlanError("report.baseline", f"is not the report.json of a python -m evaluate run (no subset_sha256); "
                        f"{_WHAT}", path)
    predictions, content = _read_predictions(folder / "predictions.csv", raw["predictions.csv"])
    return Baseline(folder.resolve(), record, predictions,
                    {name: hashlib.sha256(data).hexdigest() for name, data in raw.items()}, content)


def _read_predictions(path: Path, data: bytes) -> tuple[dict[str, tuple[int, tuple[int, ...]]], dict[str, str]]:
    def bad(what: str) -> PlanError:
        return PlanError("report.baseline", f"{what}; {_WHAT}", path)

    try:
        reader = csv.reader(io.StringIO(data.decode("utf-8"), newline=""))
        header = next(reader, None)
        if not header or header[:3] != ["image_id", "label", "pred1"]:
            raise bad("is not the predictions.csv of a python -m evaluate run (columns image_id, label, pred1, ...)")
        k = next((i for i, c in enumerate(header[2:]) if c != f"pred{i + 1}"), len(header) - 2)
        at = header.index(CONTENT_COLUMN) if CONTENT_COLUMN in header else None  # older runs have no column
        out: dict[str, tuple[int, tuple[int, ...]]] = {}
        content: dict[str, str] = {}
        for line, row in enumerate(reader, start=2):
            try:
                label, top = int(row[1]), tuple(int(v) for v in row[2:2 + k])
            except (ValueError, IndexError):
                raise bad(f"line {line}: a label and {k} class indices expected") from None
            if row[0] in out:
                raise bad(f"line {line}: image id '{row[0]}' is listed twice")
            out[row[0]] = (label, top)
            if at is not None and at < len(row) and row[at]:
                content[row[0]] = row[at]
    except UnicodeDecodeError as exc:
        raise bad(f"is not UTF-8 text ({exc.reason})") from None
    except csv.Error as exc:
        raise bad(f"is not a CSV file ({exc})") from None
    return out, content


def check_same_images(baseline: Baseline, sha256: str) -> None:
    """The two runs must cover the same ordered image list: else one line naming both hashes and how to evaluate
    the baseline's list (its subset and seed, or its image ids as a subset file)."""
    theirs = baseline.record["subset_sha256"]
    if theirs == sha256:
        return
    r, ids = baseline.record, baseline.folder / "predictions.csv"
    if r.get("subset") is not None and r.get("seed") is not None:
        how = f"data.subset {r['subset']} data.seed {r['seed']} as the baseline did"
    elif r.get("subset") is not None:
        how = f"data.subset_file listing the image_id column of {ids} in its order"
    else:
        how = "neither data.subset nor data.subset_file (the baseline evaluated every image)"
    raise PlanError("report.baseline", f"covers other images than this run: the baseline's image list has sha256 "
                    f"{theirs}, this run's {sha256}; evaluate the baseline's list: {how}, on the data it read "
                    f"({r.get('data')})", baseline.folder)


def _sources(baseline: Baseline, data: str, layout: str) -> str:
    """Which data each run read: named when they differ (the likely cause), else that the data changed."""
    r = baseline.record
    theirs, ours = f"{r.get('data')} ({r.get('layout')})", f"{data} ({layout})"
    if theirs != ours:
        return f"the baseline read {theirs}, this run reads {ours}"
    return f"both runs read {ours}: its images changed since the baseline, or its order did"


def check_same_labels(baseline: Baseline, samples, data: str, layout: str) -> None:
    """Before any model is loaded: every image of this run that the baseline has must carry the baseline's label.
    Equal ids with other labels are other images under the same names (``row-<i>`` of shuffled rows, a renamed
    file), whose predictions a comparison would pair wrongly; one line naming the data each run read."""
    differ = [(s.image_id, s.label, baseline.predictions[s.image_id][0]) for s in samples
              if s.image_id in baseline.predictions and baseline.predictions[s.image_id][0] != s.label]
    if differ:
        first = differ[0]
        _other_images(baseline, f"{len(differ)} of {len(samples)} images carry another label than in the baseline "
                      f"(first {first[0]}: label {first[1]} here, {first[2]} in the baseline)", data, layout)


def check_same_label_space(baseline: Baseline, space: dict) -> None:
    """Before any model is loaded: both runs rank the same classes (``label_space`` of report.json; a baseline from
    before the field ranked all of them). Top-1s over other classes would flip where nothing changed."""
    theirs = baseline.record.get("label_space")
    if theirs is None and space["name"] == "full" or theirs is not None and theirs.get("sha256") == space["sha256"]:
        return
    described = "all the model's classes" if theirs is None else f"{theirs.get('name')} ({theirs.get('classes')} classes)"
    raise PlanError("report.baseline", f"ranked {described}, this run ranks {space['name']} ({space['classes']} "
                    "classes); give data.label_space as the baseline did", baseline.folder)


def check_same_content(baseline: Baseline, content: dict[int, str], image_ids, data: str, layout: str) -> None:
    """After the pass (the bytes are known once read): an image whose bytes' sha256 differs from the baseline's under
    the same id is another image; one line naming the data each run read. Images without a hash on either side
    (a baseline from before the column, a decoded dataset cell) are paired by id and label only."""
    differ = [(image_ids[idx], h, baseline.content[image_ids[idx]]) for idx, h in sorted(content.items())
              if h and baseline.content.get(image_ids[idx], h) != h]
    if differ:
        first = differ[0]
        _other_images(baseline, f"{len(differ)} of {len(content)} images have other bytes than in the baseline "
                      f"(first {first[0]}: sha256 {first[1][:12]}... here, {first[2][:12]}... in the baseline)",
                      data, layout)


def _other_images(baseline: Baseline, which: str, data: str, layout: str) -> None:
    """The one line for equal ids that are other images (labels or bytes), naming the data each run read."""
    raise PlanError("report.baseline", f"pairs other images under the same ids: {which}; "
                    f"{_sources(baseline, data, layout)}; compare with a baseline of the same data", baseline.folder)


def compare(baseline: Baseline, rows, image_ids, primary: str) -> dict:
    """This run's ``primary`` row against the baseline, image by image (each run judged by its own label):
    the report.json ``baseline`` section (without ``environment_differences``, see :func:`environment_differences`)."""
    seen: set[str] = set()
    n = this1 = base1 = this5 = base5 = labels_differ = 0
    only = {"top1": [0, 0], "top5": [0, 0]}  # [only the baseline right, only this run right]
    flipped = []
    for idx, label, top in rows:
        image_id = image_ids[idx]
        if image_id in seen or image_id not in baseline.predictions:
            seen.add(image_id)
            continue
        seen.add(image_id)
        b_label, b_top = baseline.predictions[image_id]
        t = list(top[primary])
        n += 1
        labels_differ += b_label != label
        right = {"top1": (b_top[0] == b_label, t[0] == label), "top5": (b_label in b_top[:5], label in t[:5])}
        for key, (was, now) in right.items():
            only[key][0] += was and not now
            only[key][1] += now and not was
        base1, this1 = base1 + right["top1"][0], this1 + right["top1"][1]
        base5, this5 = base5 + right["top5"][0], this5 + right["top5"][1]
        if t[0] != b_top[0]:
            flipped.append({"image_id": image_id, "label": label, "baseline_top1": b_top[0], "top1": t[0],
                            "baseline_correct": right["top1"][0], "correct": right["top1"][1]})
    pct = (lambda x: 100 * x / n) if n else (lambda x: None)  # noqa: E731
    r = baseline.record
    return {
        "folder": str(baseline.folder),
        "sha256": baseline.sha256,
        "model": r.get("model"),
        "command": (r.get("provenance") or {}).get("command"),
        "started_utc": (r.get("provenance") or {}).get("started_utc"),
        "baseline_gate": r.get("gate"),
        "row": primary,
        "baseline_row": next((m.get("name") for m in r.get("models") or [] if isinstance(m, dict)), None),
        "num_images": n,
        "only_in_baseline": len(set(baseline.predictions) - seen),
        "only_in_this_run": len(seen - set(baseline.predictions)),
        "labels_differ": labels_differ,
        "top1": pct(this1), "baseline_top1": pct(base1), "top1_delta": pct(this1 - base1),
        "top5": pct(this5), "baseline_top5": pct(base5), "top5_delta": pct(this5 - base5),
        "top1_mcnemar_p": mcnemar_exact(*only["top1"]), "top5_mcnemar_p": mcnemar_exact(*only["top5"]),
        "top1_discordant": {"only_baseline_correct": only["top1"][0], "only_this_run_correct": only["top1"][1]},
        "top5_discordant": {"only_baseline_correct": only["top5"][0], "only_this_run_correct": only["top5"][1]},
        "num_flipped": len(flipped),
        "flipped": flipped,
    }


def _environment(record: dict) -> dict:
    """The facts of a record that describe where and how it ran, flattened (``versions.torch``)."""
    prov = record.get("provenance") or {}
    facts = {k: record.get(k) for k in ENVIRONMENT_KEYS}
    facts["cvt_port"] = {"version": (prov.get("cvt_port") or {}).get("version"),
                         "git_commit": ((prov.get("cvt_port") or {}).get("git") or {}).get("commit")}
    facts["weights"] = {k: (prov.get("weights") or {}).get(k) for k in ("sha256", "hub_revision")}
    flat: dict = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}", v)
        else:
            flat[prefix] = value

    for key, value in facts.items():
        walk(key, value)
    return flat


def environment_differences(baseline_record: dict, record: dict) -> dict:
    """``{"versions.torch": {"baseline": "2.12.0", "this_run": "2.13.0"}, ...}``: every environment fact that
    differs (a fact one record lacks counts as None: a baseline from an older cvt-port recorded less)."""
    before, now = _environment(baseline_record), _environment(record)
    return {k: {"baseline": before.get(k), "this_run": now.get(k)}
            for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k)}


def flipped_csv(section: dict) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(FLIPPED_COLUMNS)
    for f in section["flipped"]:
        writer.writerow([f[c] if not isinstance(f[c], bool) else str(f[c]).lower() for c in FLIPPED_COLUMNS])
    return buf.getvalue()


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _flip_text(f: dict) -> str:
    return f"{f['image_id']} (label {f['label']}): {f['baseline_top1']} -> {f['top1']}"


def markdown_lines(section: dict) -> list[str]:
    """report.md's comparison with the baseline."""
    s = section
    out = ["## Compared with the baseline", "", f"Baseline: `{s['folder']}` (report.json sha256 "
           f"`{s['sha256']['report.json']}`; its gate {s['baseline_gate']}; command `{s['command']}`)", "",
           "| | baseline | this run | delta (points) | McNemar p | only baseline right | only this run right |",
           "|---|---|---|---|---|---|---|"]
    for key in ("top1", "top5"):
        d = s[f"{key}_discordant"]
        out.append(f"| {key.replace('top', 'top-')} % | {_fmt(s[f'baseline_{key}'], '.2f')} | {_fmt(s[key], '.2f')} | "
                   f"{_fmt(s[f'{key}_delta'], '+.3f')} | {_fmt(s[f'{key}_mcnemar_p'], '.3g')} | "
                   f"{d['only_baseline_correct']} | {d['only_this_run_correct']} |")
    out += ["", f"{s['num_flipped']} of {s['num_images']} images changed their top-1 ({s['row']} row vs the "
            f"baseline's {s['baseline_row']} row; all in {FLIPPED_FILE})"
            + (f"; {s['only_in_baseline']} image(s) only in the baseline, {s['only_in_this_run']} only in this run"
               if s["only_in_baseline"] or s["only_in_this_run"] else "")
            + (f"; {s['labels_differ']} image(s) labelled differently" if s["labels_differ"] else "")]
    if s["flipped"]:
        out += ["", *[f"- {_flip_text(f)}" for f in s["flipped"][:SHOWN]]]
        if s["num_flipped"] > SHOWN:
            out.append(f"- ... and {s['num_flipped'] - SHOWN} more")
    out += ["", "What differs between the two runs' environments:", ""]
    diffs = s.get("environment_differences") or {}
    if diffs:
        out += ["| fact | baseline | this run |", "|---|---|---|"]
        out += [f"| {k} | {v['baseline']} | {v['this_run']} |" for k, v in diffs.items()]
    else:
        out.append("nothing recorded differs")
    return out


def summary_lines(section: dict) -> list[str]:
    """The terminal's lines about the comparison (the check's own line says pass or fail)."""
    s = section
    lines = [f"baseline {s['folder']}: top-1 {_fmt(s['top1_delta'], '+.3f')} points (McNemar p "
             f"{_fmt(s['top1_mcnemar_p'], '.3g')}), top-5 {_fmt(s['top5_delta'], '+.3f')} points (p "
             f"{_fmt(s['top5_mcnemar_p'], '.3g')}); {s['num_flipped']} of {s['num_images']} images changed their top-1"]
    lines += [f"  flipped: {_flip_text(f)}" for f in s["flipped"][:SHOWN]]
    if s["num_flipped"] > SHOWN:
        lines.append(f"  ... and {s['num_flipped'] - SHOWN} more (all in {FLIPPED_FILE})")
    diffs = s.get("environment_differences") or {}
    lines.append("environment vs the baseline: " + ("; ".join(f"{k} {v['baseline']} -> {v['this_run']}"
                                                             for k, v in diffs.items()) or "nothing recorded differs"))
    return lines
