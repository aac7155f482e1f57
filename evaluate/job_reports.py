"""A job's outcome: what :func:`evaluate.api.run_plan` returns, the report files and the terminal summary.

A job of one model keeps a run's flat files (:func:`evaluate.reports.report.report_texts`) and returns its
:class:`~evaluate.result.EvalResult`. A job of several models writes report.json as ``{"gate": worst, "runs":
[record, ...]}`` (each record exactly the one-model record), report.md as one table of every model then each
model's section, predictions.csv and per_class.csv with one column per model row, and returns a
:class:`~evaluate.result.ManyEvalResult`; its verdict and exit status are the worst model's (fail > not made >
pass, :func:`evaluate.result.worst_verdict`). Either way the files are written as one unit
(:func:`evaluate.reports.report.write_texts`).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from .job import Member, Sources
from .reports.html_report import model_section, page
from .reports.release import release
from .reports.report import csv_text, fmt, markdown, power_alpha, print_summary, report_texts, write_texts
from .result import EvalResult, ManyEvalResult, exit_status, worst_verdict


@dataclass(frozen=True)
class ModelRun:
    """One model's share of the pass: the model, the pass's results as a run of it alone has them
    (:func:`evaluate.job.member_results`) and what it gives back."""

    member: Member
    results: dict
    result: EvalResult


def job_record(runs: list[EvalResult]) -> dict:
    """report.json of a several-models job: the worst verdict and every model's record."""
    return {"gate": worst_verdict(run.verdict for run in runs), "runs": [run.record for run in runs]}


def job_result(members: list[Member], runs: list[EvalResult], output: Path | None) -> EvalResult | ManyEvalResult:
    """One model: its result; several: the job's."""
    if len(runs) == 1:
        return runs[0]
    return ManyEvalResult(job_record(runs), tuple(runs), tuple(m.name for m in members), output)


def report_job(plan, src: Sources, runs: list[ModelRun], output: Path | None) -> None:
    """The reports (rank 0), the summary, and after a PASSED gate only the release: results on the card, the upload
    (after the reports are written; a release needs one model, :func:`evaluate.plan.check_several_models`)."""
    if output is not None:
        write_texts(output, job_texts(src, runs))
    if plan.report.summary:
        print_job_summary(runs, output if output is not None else Path("-"))
    for run in runs:
        for line in release(plan.report, run.member.spec.model, run.result.record, output, plan.data.split,
                            run.member.variant, run.result.primary):
            if plan.report.summary:
                print(line)


def job_texts(src: Sources, runs: list[ModelRun]) -> dict[str, str]:
    """The job's report files, by name."""
    image_ids = [s.image_id for s in src.inputs.samples]
    id2label = runs[0].member.folder.config.get("id2label", {})
    class_names = [id2label.get(str(i), str(i)) for i in range(src.classes)]
    read_image = lambda idx: src.inputs.source.load_image(src.inputs.samples[idx])  # noqa: E731 (thumbnails)
    if len(runs) == 1:
        run = runs[0]
        return report_texts(run.result.record, run.results, image_ids, run.result.primary, run.result.reference,
                            class_names, read_image)
    columns = [(_column(run.member.name, row, run.result.primary), run, row) for run in runs for row in run.results["models"]]
    lines = [["image_id", "label", *[c for c, _, _ in columns]]]
    for i, (idx, label, _) in enumerate(runs[0].results["rows"]):
        lines.append([image_ids[idx], label, *[run.results["rows"][i][2][row][0] for _, run, row in columns]])
    counts = [0] * src.classes
    for _, label, _ in runs[0].results["rows"]:
        counts[label] += 1
    per_class = [["class_index", "class_name", "images", *[c for c, _, _ in columns]]]
    per_class += [[c, id2label.get(str(c), str(c)), counts[c],
                   *[f"{run.results['models'][row].per_class[c]:.4f}" for _, run, row in columns]]
                  for c in range(src.classes) if counts[c]]
    record = job_record([run.result for run in runs])
    names = [run.member.name for run in runs]
    md = [f"# Evaluation of {len(runs)} models", "", *table(record, names), "",
          f"**Gate: {record['gate'].upper()}** (the worst of the models' verdicts)", ""]
    for name, one in zip(names, record["runs"]):
        md += [markdown(one).replace("# Evaluation of", f"## {name}:", 1)]
    sections = [model_section(run.result.record, run.results, image_ids, run.result.primary, run.result.reference,
                              class_names, read_image, heading=name) for name, run in zip(names, runs)]
    return {"report.json": json.dumps(record, indent=2) + "\n", "report.md": "\n".join(md),
            "report.html": page(f"Evaluation of {len(runs)} models (gate {record['gate']})", sections),
            "predictions.csv": csv_text(lines), "per_class.csv": csv_text(per_class)}


def _column(name: str, row: str, primary: str) -> str:
    return f"{name}_top1" if row == primary else f"{name}/{row}_top1"


def table(record: dict, names: list[str]) -> list[str]:
    """Every model's rows in one Markdown table, with each model's verdict."""
    lines = ["| model | row | variant | preprocessing | top-1 % | top-5 % | gate |", "|---|---|---|---|---|---|---|"]
    for name, run in zip(names, record["runs"]):
        for row in run["models"]:
            lines.append(f"| {name} | {row['name']} | {run['variant'] or '-'} | {row['preprocessing']} | "
                         f"{fmt(row['top1'])} | {fmt(row['top5'])} | {run['gate']} |")
    return lines


def print_job_summary(runs: list[ModelRun], output: Path, stream=None) -> None:
    """The terminal summary: one model's (:func:`evaluate.reports.report.print_summary`), or the job's table and each
    model's checks."""
    if len(runs) == 1:
        print_summary(runs[0].result.record, output, stream)
        return
    record, names = job_record([run.result for run in runs]), [run.member.name for run in runs]
    w = lambda s="": print(s, file=stream or sys.stdout)  # noqa: E731
    w()
    for line in table(record, names):
        w(line)
    w()
    for name, run in zip(names, record["runs"]):
        w(f"{name}: {run['num_samples']} images, top-1 {run['top1']:.2f}%, gate {run['gate'].upper()} "
          f"(exit status {int(exit_status(run['gate']))})")
        for c in run["checks"]:
            w(f"  [{c['status']:>8}] {c['name']}: {c['detail']}")
    w(f"GATE: {record['gate'].upper()}   (the worst of {len(names)} models; {power_alpha(record['runs'])}; "
      f"reports in {output})")
