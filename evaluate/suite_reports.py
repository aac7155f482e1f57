"""A suite job's outcome (``data.suite``): its record, its report files and its terminal summary.

Each set's reports are the ones a run on that set alone writes (:func:`evaluate.job_reports.job_texts`), in
``output/<set>/``; beside them the suite's report.json (``{"suite": name, "sets": [record, ...], "gate": worst}``,
each set's record with its ``set`` name) and report.md (one line per set). All are written as one unit
(:func:`evaluate.reports.report.write_texts`): a suite stopped half-way leaves the previous reports whole. The
verdict is the worst set's (fail > not made > pass, :func:`evaluate.result.worst_verdict`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .reports.report import fmt, power_alpha, write_texts
from .result import EvalResult, ManyEvalResult, SuiteResult, exit_status, worst_verdict


def suite_result(name: str, names: list[str], results: list[EvalResult | ManyEvalResult],
                 output: Path | None) -> SuiteResult:
    record = {"suite": name, "sets": [{"set": set_name, **result.record} for set_name, result in zip(names, results)],
              "gate": worst_verdict(result.verdict for result in results)}
    return SuiteResult(record, tuple(results), tuple(names), output)


def table(record: dict) -> list[str]:
    """One Markdown line per set (per set and model, for several models): its data, images, the primary row's
    figures and its verdict."""
    lines = ["| set | model | data | images | top-1 % | top-5 % | gate |", "|---|---|---|---|---|---|---|"]
    for one in record["sets"]:
        for run in one.get("runs", [one]):
            lines.append(f"| {one['set']} | {Path(run['model']).name} | {run['data']} | {run['num_samples']} | "
                         f"{fmt(run['top1'])} | {fmt(run['top5'])} | {run['gate']} |")
    return lines


def suite_texts(record: dict) -> dict[str, str]:
    """The suite's own files (the sets' are in their folders)."""
    md = [f"# Suite {record['suite']}: {len(record['sets'])} test sets", "", *table(record), "",
          f"**Gate: {record['gate'].upper()}** (the worst of the sets' verdicts)", "",
          *[f"- [{one['set']}]({one['set']}/report.md)" for one in record["sets"]], ""]
    return {"report.json": json.dumps(record, indent=2) + "\n", "report.md": "\n".join(md)}


def report_suite(plan, result: SuiteResult, set_texts: dict[str, str]) -> None:
    """The reports (rank 0) and the summary."""
    output = result.output
    if output is not None:
        write_texts(output, {**set_texts, **suite_texts(result.record)})
    if plan.report.summary:
        print_suite_summary(result.record, output if output is not None else Path("-"))


def print_suite_summary(record: dict, output: Path, stream=None) -> None:
    """The table (one line per set with its verdict), each set's checks, the suite's verdict."""
    w = lambda s="": print(s, file=stream or sys.stdout)  # noqa: E731
    w()
    w(f"suite {record['suite']}: {len(record['sets'])} test sets")
    for line in table(record):
        w(line)
    w()
    for one in record["sets"]:
        w(f"{one['set']}: gate {one['gate'].upper()} (exit status {int(exit_status(one['gate']))})")
        for run in one.get("runs", [one]):
            for c in run["checks"]:
                w(f"  [{c['status']:>8}] {run['model'] + ': ' if 'runs' in one else ''}{c['name']}: {c['detail']}")
    runs = [run for one in record["sets"] for run in one.get("runs", [one])]
    w(f"GATE: {record['gate'].upper()}   (the worst of {len(record['sets'])} sets; {power_alpha(runs)}; "
      f"reports in {output})")
