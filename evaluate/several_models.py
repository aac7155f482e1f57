"""Several models in one job (``--model A --model B``, ``--models-file``): every model runs on the very same
batches of one pass, and each gets the record, verdict and predictions a run of it alone would give.

**Images read once.** Each image is decoded once for the whole job. Models whose preprocessing is the same
(the same release settings: size, crop, interpolation, normalisation; or the same image processor) share its
pixels; models of other settings (a 224 and a 384 variant) get their own preprocessing of the same decoded
image, under a pixel key of their own (``release``, ``release-2``, ...): one pass, one decode, one resize per
distinct protocol, never one per model. :class:`~evaluate.lightning_module.EvalModule` already runs several
candidates, each on its own preprocessing of a batch; here each model's candidates are named
``<name>/<row>`` (``cvt-13-224/converted``) and the results are split back per model afterwards.

**What is refused** (exit 2, before anything is loaded, :func:`evaluate.plan.check_several_models`): the
options that concern one model (``reference``, ``baseline``, ``update_card``, ``push_to_hub``), a model given
twice; and, before any model is loaded, models whose class counts or label maps differ (the images carry one
label each, so every model must speak the same classes). ``stock``/``with_stock``/``preprocessing both``
apply to every model.

**Reports**: report.json is ``{"gate": worst, "runs": [record, ...]}`` (each record exactly the one-model
record), report.md one table of every model then each model's section, predictions.csv and per_class.csv one
column per model row; the job's verdict and exit status are the worst model's (fail > not made > pass,
:func:`evaluate.result.worst_verdict`).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from cvt_port.provenance import run_provenance, utc_now, weights_provenance
from cvt_port.variants import Variant

from .cache_key import describe_transform, sha256_json
from .candidates import Candidates, build_candidates, tune_models
from .cache_inputs import run_inputs
from .inputs import Inputs, build_transforms, num_classes
from .models import LoadedFolder, inspect_folder, resolve_variant
from .plan import EvalPlan, ModelEntry, ModelSpec, PlanError
from .result import EvalResult, ManyEvalResult, Prediction, exit_status, worst_verdict


@dataclass
class Member:
    """One model of the job: its table name, its one-model spec, folder and variant, the pixel key of each of its
    preprocessing modes, and (once loaded) its candidates, whose names map to internal candidate names."""

    name: str
    spec: ModelSpec
    folder: LoadedFolder
    variant: Variant | None
    keys: dict[str, str] = field(default_factory=dict)  # mode ("release", "hf") -> pixel key of its group
    candidates: Candidates | None = None
    internal: dict[str, str] = field(default_factory=dict)  # row name ("converted") -> candidate name in the pass


def read_models_file(path: str | Path) -> tuple[ModelEntry, ...]:
    """``FOLDER`` or ``FOLDER CONFIG`` per line (blank lines and ``#`` comments skipped); a one-line
    :class:`PlanError` naming the file and line otherwise."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError("models.extra_models", f"cannot be read ({type(exc).__name__})", path) from None
    entries = []
    for n, line in enumerate(text.splitlines(), start=1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) > 2:
            raise PlanError("models.extra_models", f"line {n} has {len(words)} words; give 'FOLDER' or 'FOLDER CONFIG' "
                            "per line", path)
        entries.append(ModelEntry(words[0], words[1] if len(words) == 2 else None))
    if not entries:
        raise PlanError("models.extra_models", "names no model; give one 'FOLDER [CONFIG]' per line", path)
    return tuple(entries)


def table_names(models: list[str]) -> list[str]:
    """Each model's name in the table: its folder's (or Hub repo's) last part, or the whole of what was given
    where two models share that last part."""
    short = [Path(m.rstrip("/\\")).name or m for m in models]
    return [s if short.count(s) == 1 else m for s, m in zip(short, models)]


def prepare(plan: EvalPlan, cache_dir: Path | None = None) -> tuple[list[Member], Inputs, object, dict, int]:
    """Every model's folder and variant, the images (checked against the models' one label set; from
    ``cache_dir``'s own list when it was built with these data flags) and one transform per distinct
    preprocessing: (members, inputs, the cache's source stamps or None, transforms by pixel key, classes).
    Nothing loaded."""
    entries = plan.models.entries
    names = table_names([e.model for e in entries])
    members = []
    for name, entry in zip(names, entries):
        spec = dataclasses.replace(plan.models, model=entry.model, config=entry.config, extra_models=())
        folder = inspect_folder(entry.model)
        members.append(Member(name, spec, folder, resolve_variant(entry.config, folder)))
    classes = [num_classes(m.folder, m.variant) for m in members]
    if len(set(classes)) > 1:
        raise PlanError("models.model", "the models have different numbers of classes (" + ", ".join(
            f"{m.name} {c}" for m, c in zip(members, classes)) + "); evaluate models of one label set together")
    maps = [m.folder.label2id for m in members]
    if any(a is not None and b is not None and a != b for a in maps for b in maps):
        odd = next(m.name for m in members if m.folder.label2id not in (None, maps[0]))
        raise PlanError("models.model", f"{odd} names its classes differently from {members[0].name} (label2id); "
                        "evaluate models of one label set together")
    inputs, stamps = run_inputs(plan.data, cache_dir, next((l2i for l2i in maps if l2i), None), classes[0])
    transforms: dict = {}
    by_description: dict[str, str] = {}
    for m in members:
        for mode, transform in build_transforms(plan.modes, m.variant, m.folder, m.spec.trust_remote_code).items():
            described = sha256_json(describe_transform(transform))
            if described not in by_description:
                n = sum(key.split("-")[0] == mode for key in transforms)
                by_description[described] = key = mode if n == 0 else f"{mode}-{n + 1}"
                transforms[key] = transform
            m.keys[mode] = by_description[described]
    return members, inputs, stamps, transforms, classes[0]


def load_members(members: list[Member], plan: EvalPlan) -> list:
    """Every model's candidates, tuned, renamed ``<name>/<row>`` and reading its group's pixels."""
    from .lightning_module import _safe

    for m in members:
        m.candidates = build_candidates(m.spec, plan.modes, m.folder, m.variant)
        tune_models(m.candidates, plan.run.attention, plan.run.compile)
    rows = [(i, m, c) for i, m in enumerate(members) for c in m.candidates.models]
    names = [f"{m.name}/{c.name}" for _, m, c in rows]
    if len({_safe(n) for n in names}) < len(names):  # names that differ only in punctuation: numbered
        names = [f"{i + 1}:{n}" for (i, _, _), n in zip(rows, names)]
    every = []
    for (_, m, c), name in zip(rows, names):
        m.internal[c.name] = name
        every.append(dataclasses.replace(c, name=name, preprocessing=m.keys[c.preprocessing]))
    return every


def member_results(results: dict, m: Member) -> dict:
    """The pass's results as a run of this model alone would have them: its rows only, under their own names and
    preprocessing modes."""
    mode_of = {key: mode for mode, key in m.keys.items()}
    models = {row: dataclasses.replace(results["models"][name], name=row,
                                       preprocessing=mode_of[results["models"][name].preprocessing])
              for row, name in m.internal.items()}
    rows = [(idx, label, {row: top[name] for row, name in m.internal.items()}) for idx, label, top in results["rows"]]
    return {**results, "models": models, "rows": rows}


def run_many(plan: EvalPlan) -> ManyEvalResult:
    """Evaluate every model of ``plan.models.entries`` in one pass (see the module docstring)."""
    from .dataset import EvalDataset
    from .gate import judge
    from .lightning_module import EvalDataModule, EvalModule
    from .numerics import autocast_dtype, env_overrides, float32_head, float32_mode, override_warnings
    from .preflight import check_shipped_data
    from .report import build_record, check_output
    from .run import _batch_size, on_rank_zero_then_together, run_facts
    from .trainer import make_trainer, run_validation

    d, r = plan.data, plan.run
    started = utc_now()
    trainer = make_trainer(r, plan.report)
    overrides = env_overrides()
    if trainer.is_global_zero and plan.report.summary:
        for line in override_warnings(overrides, r.tf32):
            print(line, file=sys.stderr)
    output = Path(plan.report.output) if plan.report.output is not None else None
    if output is not None:
        check_output(output)
    members, inputs, stamps, transforms, n_classes = prepare(plan, r.cache_dir)
    check_shipped_data(s.image_id for s in inputs.samples)
    with ThreadPoolExecutor(2, thread_name_prefix="cvt-port-sha256") as pool:
        weights = [pool.submit(weights_provenance, m.folder.source, m.folder.is_local, m.folder.conversion_facts())
                   for m in members]
        candidates = load_members(members, plan)
    mixed = autocast_dtype(trainer.precision)
    heads = [c.name for c in candidates if mixed is not None and c.kind != "reference" and float32_head(c.module)]
    if r.cache_dir is not None:
        from .cache import open_cache

        dataset = open_cache(Path(r.cache_dir), inputs.samples, transforms, source=inputs.source, stamps=stamps)
    else:
        dataset = EvalDataset(inputs.source, inputs.samples, transforms)
    hparams = None
    if plan.report.loggers:
        hparams = {"models": [m.spec.model for m in members], "data": str(d.source), "images": len(inputs.samples),
                   "subset": d.subset, "seed": d.seed, "preprocessing": d.preprocessing.value,
                   "precision": str(trainer.precision), "attention": r.attention, "compile": bool(r.compile),
                   "tf32": bool(r.tf32), "batch_size": r.batch_size, "world_size": trainer.world_size}
    # batch size "auto": probed with every model of the job on the device (evaluate.run._batch_size)
    batch_size, _ = _batch_size(r, SimpleNamespace(models=candidates), dataset.shapes, trainer, mixed,
                                plan.report.summary)
    module = EvalModule(candidates, {key: t.normalization for key, t in transforms.items()}, n_classes,
                        skip_bad_images=d.skip_bad_images, pad_to=batch_size if r.compile else None, hparams=hparams)
    with float32_mode(r.tf32):
        run_validation(trainer, module, EvalDataModule(dataset, batch_size, r.num_workers))

    samples = inputs.samples
    image_ids = [s.image_id for s in samples]
    runs = []
    for m, weighed in zip(members, weights):
        view = member_results(module.results, m)
        facts = run_facts(plan, trainer, inputs, m.spec.model, m.variant, m.folder.config,
                          [n for n in heads if n in m.internal.values()], overrides)
        primary = m.candidates.primary
        full = (not inputs.is_subset and m.variant is not None
                and view["models"][primary].count == m.variant.reference.get("num_samples"))
        hf = transforms.get(m.keys.get("hf", ""))
        checks = judge(view, primary, None, m.variant, full)
        record = build_record(results=view, primary=primary, reference=None, run=facts, variant=m.variant,
                              image_ids=image_ids, full=full, checks=checks, image_processor=hf.describe() if hf is not None else None,
                              provenance=run_provenance(plan.report.command, started, weighed.result()))
        record["streaming"], record["data_revision"] = d.streaming, d.revision  # as evaluate.run.run_plan adds them
        predictions = tuple(Prediction(image_ids[idx], label, {k: tuple(v) for k, v in top.items()})
                            for idx, label, top in view["rows"])
        runs.append(EvalResult(record, predictions, primary, None, output))
    record = {"gate": worst_verdict(run.verdict for run in runs), "runs": [run.record for run in runs]}

    def report() -> None:
        if output is not None:
            write_many_reports(output, record, members, module.results, image_ids, n_classes)
        if plan.report.summary:
            print_many_summary(record, [m.name for m in members], output if output is not None else Path("-"))

    on_rank_zero_then_together(trainer.is_global_zero, report)
    return ManyEvalResult(record, tuple(runs), tuple(m.name for m in members), output)


def build_many_cache(plan: EvalPlan, cache_dir: Path, overwrite: bool = False) -> tuple[Path, int, list[str]]:
    """``cache build`` for a several-models plan: one cache holding every distinct preprocessing."""
    from .allocation import read_allocation
    from .run import build_cache_of

    alloc = read_allocation()  # before the data: an unusable launcher environment is found first
    _, inputs, _, transforms, _ = prepare(plan)
    return build_cache_of(plan, cache_dir, inputs, transforms, alloc, overwrite)


# ------------------------------------------------------------------------------------------------ reports

def table(record: dict, names: list[str]) -> list[str]:
    """Every model's rows in one Markdown table, with each model's verdict."""
    from .report import _fmt

    lines = ["| model | row | variant | preprocessing | top-1 % | top-5 % | gate |", "|---|---|---|---|---|---|---|"]
    for name, run in zip(names, record["runs"]):
        for row in run["models"]:
            lines.append(f"| {name} | {row['name']} | {run['variant'] or '-'} | {row['preprocessing']} | "
                         f"{_fmt(row['top1'])} | {_fmt(row['top5'])} | {run['gate']} |")
    return lines


def _column(name: str, row: str, primary: str) -> str:
    return f"{name}_top1" if row == primary else f"{name}/{row}_top1"


def write_many_reports(output: Path, record: dict, members: list[Member], results: dict, image_ids,
                       n_classes: int) -> None:
    """report.json, report.md, predictions.csv (``image_id,label,<name>_top1,...``) and per_class.csv (one column
    per model row), written as one unit like a one-model run's (:func:`evaluate.report.write_reports`)."""
    import os

    from cvt_port.atomic import staged_dir

    from .report import _carry_over, _csv, check_output, markdown

    output = Path(os.path.realpath(output))
    check_output(output)
    columns = [(_column(m.name, row, m.candidates.primary), name) for m in members for row, name in m.internal.items()]
    lines = [["image_id", "label", *[c for c, _ in columns]]]
    lines += [[image_ids[idx], label, *[top[name][0] for _, name in columns]] for idx, label, top in results["rows"]]
    config = members[0].folder.config.get("id2label", {})
    counts = [0] * n_classes
    for _, label, _ in results["rows"]:
        counts[label] += 1
    per_class = [["class_index", "class_name", "images", *[c for c, _ in columns]]]
    per_class += [[c, config.get(str(c), str(c)), counts[c],
                   *[f"{results['models'][name].per_class[c]:.4f}" for _, name in columns]]
                  for c in range(n_classes) if counts[c]]
    md = [f"# Evaluation of {len(members)} models", "", *table(record, [m.name for m in members]), "",
          f"**Gate: {record['gate'].upper()}** (the worst of the models' verdicts)", ""]
    for m, run in zip(members, record["runs"]):
        md += [markdown(run).replace("# Evaluation of", f"## {m.name}:", 1)]
    texts = {"report.json": json.dumps(record, indent=2) + "\n", "report.md": "\n".join(md),
             "predictions.csv": _csv(lines), "per_class.csv": _csv(per_class)}
    with staged_dir(output) as tmp:
        for name, text in texts.items():
            with open(tmp / name, "w", encoding="utf-8", newline="") as fh:
                fh.write(text)
        _carry_over(output, tmp)


def print_many_summary(record: dict, names: list[str], output: Path, stream=None) -> None:
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
    w(f"GATE: {record['gate'].upper()}   (the worst of {len(names)} models; reports in {output})")
