"""One flat result record (report.json), the same as a readable table (report.md), per-image
predictions (predictions.csv) and per-class accuracy (per_class.csv), plus the terminal summary.

Everything here is computed from the gathered per-image rows and the synced metrics; nothing
is measured again.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import shutil
import sys
from pathlib import Path

from cvt_port.atomic import staged_dir
from cvt_port.outputs import check_output_folder
from cvt_port.provenance import LIBRARIES, library_versions

from ..verdict import baseline as baseline_
from .html_report import report_html
from ..verdict.gate import Check, verdict
from ..verdict.gate_settings import gate_settings
from ..plan import PlanError
from ..sources.real_labels import real_labels_for
from ..result import RunFacts
from ..verdict.reference_sample import gate_note
from ..verdict.stats import mcnemar_exact, wilson_interval


def compare(rows, image_ids, a: str, b: str) -> dict:
    """Per-image comparison of model ``a`` (the converted one) with ``b`` (the original), on the images both ran on
    (the original may have run on a sample: ``--reference-sample``)."""
    only_a = only_b = 0
    differs = []
    for idx, label, top in rows:
        if b not in top:
            continue
        pa, pb = top[a][0], top[b][0]
        only_a += pa == label and pb != label
        only_b += pb == label and pa != label
        if pa != pb:
            differs.append(image_ids[idx])
    return {"mcnemar_p": mcnemar_exact(only_a, only_b), "only_converted_correct": only_a,
            "only_original_correct": only_b, "top1_differs": differs}


def real_top1(rows, image_ids, name: str) -> float | None:
    """ImageNet-ReaL top-1 (images without an acceptable label are left out), or None."""
    labels = real_labels_for([image_ids[idx] for idx, _, _ in rows]) if rows else None
    if labels is None:
        return None
    judged = [(top[name][0] in real) for (_, _, top), real in zip(rows, labels) if real]
    return 100 * sum(judged) / len(judged) if judged else None


def build_record(*, results: dict, primary: str, reference: str | None, run: RunFacts, variant, image_ids,
                 full: bool, checks: list[Check], image_processor: dict | None = None, provenance: dict | None = None,
                 baseline: baseline_.Baseline | None = None, against: dict | None = None) -> dict:
    """The flat record: it formats what was measured and judged, and decides nothing. ``checks`` are the gate's
    (:func:`evaluate.verdict.gate.judge`); ``run`` carries the settings (model, data, precision, devices, ...);
    ``provenance`` what made the run (:func:`cvt_port.provenance.run_provenance`); ``baseline`` an earlier run's
    reports and ``against`` this run's comparison with them (:func:`evaluate.verdict.baseline.compare`; adds the
    ``baseline`` section)."""
    models = results["models"]
    p = models[primary]
    ref = models.get(reference) if reference else None
    n = p.count
    rows = results["rows"]
    cmp = compare(rows, image_ids, primary, reference) if ref else None
    lo, hi = wilson_interval(round(p.top1 * n / 100), n, 0.95)
    elapsed = results["elapsed_s"]
    record = {
        "model": run.model,
        "variant": variant.name if variant else None,
        "num_samples": n,
        "top1": p.top1,
        "top5": p.top5,
        "top1_ci95": [lo, hi],
        "real_top1": real_top1(rows, image_ids, primary),
        "reference_top1": ref.top1 if ref else None,
        "agreement": p.agreement if ref else None,
        "max_abs_logit_diff": p.max_abs_logit_diff if ref else None,
        "mcnemar_p": cmp["mcnemar_p"] if cmp else None,
        "gate": verdict(checks).value,
        "checks": [c.as_dict() for c in checks],
        "gate_settings": dataclasses.asdict(gate_settings(variant)),  # what the checks were judged with
        **{k: getattr(run, k) for k in ("img_size", "crop_pct", "interpolation", "preprocessing", "precision", "devices",
                                        "world_size", "num_nodes", "attention", "compile", "cache", "cluster_environment",
                                        "numerics", "hardware")},
        "images_per_second": _steady_rate(results, n),
        "pass_seconds": elapsed,
        "subset_sha256": run.subset_sha256,
        "versions": library_versions(*LIBRARIES),
        "image_processor": image_processor,  # the folder's processor class and backend (preprocessing hf)
        "provenance": provenance,
        # beyond the flat core: where the figures came from, and every model side by side
        "recorded_top1": variant.reference_top1 if variant else None,
        "data": run.data,
        "layout": run.layout,
        "subset": run.subset,
        "seed": run.seed,
        "full_dataset": full,
        "num_bad_images": len(results["bad_images"]),
        "bad_images": results["bad_images"],
        "top1_differs": cmp["top1_differs"] if cmp else None,
        "models": [
            {"name": m.name, "kind": m.kind, "preprocessing": m.preprocessing, "top1": m.top1, "top5": m.top5,
             "agreement_with_original": m.agreement, "max_abs_logit_diff": m.max_abs_logit_diff,
             **({"mcnemar_p": compare(rows, image_ids, m.name, reference)["mcnemar_p"]} if ref and m.name != reference else {})}
            for m in models.values()
        ],
    }
    if against is not None:
        record["baseline"] = {**against, "environment_differences": baseline_.environment_differences(baseline.record,
                                                                                                      record)}
    return record


def _steady_rate(results: dict, n: int) -> float | None:
    """Images/s after each rank's first batch (warm-up and torch.compile excluded); the whole pass
    when there is only one batch."""
    rest, steady = n - results["first_batch_images"], results["steady_s"]
    if rest > 0 and steady > 0:
        return rest / steady
    return n / results["elapsed_s"] if results["elapsed_s"] > 0 else None


def fmt(v, spec=".2f") -> str:
    return "-" if v is None else format(v, spec)


def table(record: dict) -> list[str]:
    """The side-by-side table as Markdown lines (also what the terminal shows)."""
    lines = ["| model | preprocessing | top-1 % | top-5 % | agreement with original % | max abs logit diff | McNemar p |",
             "|---|---|---|---|---|---|---|"]
    for m in record["models"]:
        agree = None if m["agreement_with_original"] is None else 100 * m["agreement_with_original"]
        lines.append(f"| {m['name']} | {m['preprocessing']} | {fmt(m['top1'])} | {fmt(m['top5'])} | "
                     f"{fmt(agree, '.3f')} | {fmt(m['max_abs_logit_diff'], '.3g')} | {fmt(m.get('mcnemar_p'), '.3g')} |")
    return lines


def markdown(record: dict) -> str:
    out = [f"# Evaluation of {record['model']}", "", *table(record), "",
           f"**Gate: {record['gate'].upper()}**", "", "| check | status | detail |", "|---|---|---|"]
    out += [f"| {c['name']} | {c['status']} | {c['detail']} |" for c in record["checks"]]
    out += ["", "| field | value |", "|---|---|"]
    skip = {"checks", "models", "top1_differs", "bad_images", "baseline"}
    out += [f"| {k} | {json.dumps(v) if isinstance(v, (list, dict)) else v} |" for k, v in record.items() if k not in skip]
    if record.get("top1_differs"):
        out += ["", "Images whose top-1 differs from the original: " + ", ".join(record["top1_differs"][:200])]
    if record.get("bad_images"):
        out += ["", "Skipped bad images:", *[f"- {m}" for m in record["bad_images"]]]
    if record.get("baseline"):
        out += ["", *baseline_.markdown_lines(record["baseline"])]
    return "\n".join(out) + "\n"


REPORT_FILES = ("report.json", "report.md", "report.html", "predictions.csv", "per_class.csv")
OPTIONAL_REPORT_FILES = (baseline_.FLIPPED_FILE,)  # written when the run has them (a baseline comparison)
# cvt_port.atomic's and the converter's temporary names; the lock and launch stamp beside the demo's model folder
_OURS_HIDDEN = re.compile(r"^\..+(\.(tmp|old)-|\.lock$|\.launch$)")


def report_texts(record: dict, results: dict, image_ids, primary: str, reference: str | None,
                 class_names: list[str], read_image=None) -> dict[str, str]:
    """One model's report.json, report.md, report.html, predictions.csv and per_class.csv (and flipped.csv after a
    baseline comparison), by file name. ``read_image(index)`` reads an image again for report.html's thumbnails."""
    others = [n for n in results["models"] if n not in (primary, reference)]
    k = max((len(top[primary]) for _, _, top in results["rows"]), default=5)
    # the last column: the sha256 of the bytes each image was decoded from (empty where none were read), so that
    # a later --baseline pairs images by content as well as by id (evaluate.verdict.baseline)
    content = results.get("content") or {}
    lines = [["image_id", "label", *[f"pred{i + 1}" for i in range(k)], *(["reference_top1"] if reference else []),
              *[f"{n}_top1" for n in others], baseline_.CONTENT_COLUMN]]
    for idx, label, top in results["rows"]:
        lines.append([image_ids[idx], label, *top[primary], *([top[reference][0] if reference in top else ""]
                                                               if reference else []),
                      *[top[n][0] for n in others], content.get(idx, "")])
    counts = [0] * len(class_names)
    for _, label, _ in results["rows"]:
        counts[label] += 1
    pc = [["class_index", "class_name", "images", *[f"{n}_top1" for n in results["models"]]]]
    for c, name in enumerate(class_names):
        if counts[c]:
            pc.append([c, name, counts[c], *[f"{m.per_class[c]:.4f}" for m in results["models"].values()]])
    texts = {"report.json": json.dumps(record, indent=2) + "\n", "report.md": markdown(record),
             "report.html": report_html(record, results, image_ids, primary, reference, class_names, read_image),
             "predictions.csv": csv_text(lines), "per_class.csv": csv_text(pc)}
    if record.get("baseline"):
        texts[baseline_.FLIPPED_FILE] = baseline_.flipped_csv(record["baseline"])
    return texts


def write_reports(output: Path, record: dict, results: dict, image_ids, primary: str, reference: str | None,
                  class_names: list[str]) -> None:
    """One model's reports into ``output`` (:func:`report_texts`, :func:`write_texts`)."""
    write_texts(output, report_texts(record, results, image_ids, primary, reference, class_names))


def write_texts(output: Path, texts: dict[str, str]) -> None:
    """Write a job's report files (by name) into ``output`` as one unit.

    They are written into a new folder beside ``output`` which then replaces it whole
    (:func:`cvt_port.atomic.staged_dir`): the previous report stays intact until the new one is
    complete, two runs given the same ``output`` leave one run's reports, never a mix, and the files
    get the umask's usual permissions like the model folder. A converted model folder already in
    ``output`` (the default demo's) is carried into the new folder (:func:`_carry_over`).
    """
    output = Path(os.path.realpath(output))  # a link is followed: its folder is the one replaced
    check_output(output)
    with staged_dir(output) as tmp:
        for name in texts:  # "val/report.json": a suite's set has its reports in a folder of its own
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            with open(tmp / name, "w", encoding="utf-8", newline="") as fh:
                fh.write(texts[name])
        _carry_over(output, tmp)


def check_output(output: Path) -> None:
    """The folder a run's reports go to is the run's own, replaced as a whole: it must be new, empty or
    hold a previous run's files (reports, converted model folders), and not hold the current folder.
    A one-line :class:`~evaluate.plan.PlanError` otherwise; nothing is written here (a run can call it before its pass)."""
    output = Path(os.path.realpath(output))  # a link is followed: its folder is the one replaced
    if output.exists() and not output.is_dir():
        raise PlanError("report.output", "exists and is not a folder; give a folder for the reports", output)
    cwd = Path.cwd().resolve()
    if output.resolve() == cwd or output.resolve() in cwd.parents:
        raise PlanError("report.output", "holds the current folder, but the reports' folder is replaced as a whole "
                        "when the run ends; give a folder of its own", output)
    if output.is_dir():
        foreign = next((p.name for p in sorted(output.iterdir()) if not _ours(p)), None)
        if foreign is not None:
            raise PlanError("report.output", f"holds {foreign!r}, which is not a report or model folder of a previous "
                            "run, and the reports' folder is replaced as a whole; give a new or empty folder", output)
    # a real write test: os.access says yes to root in an immutable folder or on a read-only mount
    check_output_folder(output, "report.output ")


def _ours(entry: Path) -> bool:
    """A report file, a converted model folder (the default demo writes one into the output folder), or a temporary
    folder of ours."""
    if entry.name in REPORT_FILES + OPTIONAL_REPORT_FILES or _OURS_HIDDEN.match(entry.name) or _set_reports(entry):
        return True
    return entry.is_dir() and not entry.is_symlink() and ((entry / "config.json").is_file()
                                                           or (entry / "conversion.json").is_file())


def _set_reports(entry: Path) -> bool:
    """A previous suite's set folder (``output/<set>/``): report files only. Replaced with the rest, never carried."""
    if not entry.is_dir() or entry.is_symlink() or not (entry / "report.json").is_file():
        return False
    return all(p.name in REPORT_FILES + OPTIONAL_REPORT_FILES for p in entry.iterdir())


def _carry_over(old: Path, new: Path) -> None:
    """Every model folder of a previous output folder (e.g. the demo's converted model) goes into the
    new one, as hard links (copies where the file system has none): the previous folder stays whole
    until the swap, and a folder converted meanwhile by another run is taken as it is now."""
    if not old.is_dir():
        return
    for entry in old.iterdir():
        if (entry.name in REPORT_FILES + OPTIONAL_REPORT_FILES or _OURS_HIDDEN.match(entry.name) or _set_reports(entry)
                or not _ours(entry)):
            continue
        for _ in range(3):  # a concurrent conversion may swap the folder while it is being linked: retry
            try:
                shutil.copytree(entry, new / entry.name, symlinks=True, copy_function=_link_or_copy)
                break
            except (FileNotFoundError, shutil.Error):
                shutil.rmtree(new / entry.name, ignore_errors=True)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def csv_text(rows) -> str:
    import io

    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def print_summary(record: dict, output: Path, stream=None) -> None:
    w = lambda s="": print(s, file=stream or sys.stdout)  # noqa: E731
    w()
    for line in table(record):
        w(line)
    w()
    lo, hi = record["top1_ci95"]
    w(f"{record['num_samples']} images, top-1 {record['top1']:.2f}% (95% CI {lo:.2f}-{hi:.2f}), "
      f"{fmt(record['images_per_second'], '.1f')} images/s after the first batch ({record['pass_seconds']:.1f} s pass) "
      f"on {record['world_size']} process(es)"
      + (f", ReaL top-1 {record['real_top1']:.2f}%" if record["real_top1"] is not None else ""))
    space = record.get("label_space")
    if space and space["name"] != "full":
        w(f"label space {space['name']}: ranked over its {space['classes']} classes (the others' logits masked)")
    if space and space.get("note"):  # detected, where another space would rank otherwise: which, and how to choose
        w(f"label space {space['name']} (detected): {space['note']} (on the command line: --label-space)")
    if record["num_bad_images"]:
        w(f"{record['num_bad_images']} bad image(s) skipped (listed in report.md)")
    for c in record["checks"]:
        w(f"  [{c['status']:>8}] {c['name']}: {c['detail']}")
    for line in baseline_.summary_lines(record["baseline"]) if record.get("baseline") else []:
        w(line)
    w(f"GATE: {record['gate'].upper()}{gate_note(record.get('reference_sample'))}   ({power_alpha([record])}; reports in {output})")


def power_alpha(records: list[dict]) -> str:
    """The power and alpha the gate judged with, for the GATE line: one pair, or each record's where they differ."""
    pairs = dict.fromkeys(f"power {g['power']:g}, alpha {g['alpha']:g}" for g in
                          (r["gate_settings"] for r in records if r.get("gate_settings")))
    if len(pairs) <= 1:
        return next(iter(pairs), "power and alpha not recorded")
    return f"power/alpha per run: {' | '.join(pairs)}"
