"""One evaluation job, N >= 1 models, following the plan one way: plan -> sources (every model's folder and
variant, the images) -> models -> pixels (one preprocessing per distinct protocol) -> Lightning validate ->
per-model results -> verdict -> reports. A run of one model is a job of one (:mod:`evaluate.job`).
:func:`run_plan` returns an :class:`~evaluate.result.EvalResult` for one model, a
:class:`~evaluate.result.ManyEvalResult` for several (:mod:`evaluate.job_reports`); it prints and writes only
what the plan's :class:`~evaluate.plan.ReportSpec` asks for. A suite (``data.suite``) runs this one path once per
test set, the set's data a parameter of it, and returns a :class:`~evaluate.result.SuiteResult`."""

from __future__ import annotations

import sys
from pathlib import Path

from cvt_port.provenance import cuda_driver_version, run_provenance, utc_now

from .verdict.baseline import check_same_content, check_same_images, check_same_label_space, check_same_labels
from .verdict.baseline import compare, read_baseline
from .verdict.gate import judge
from .job import Member, Sources, check_input_sizes, hash_weights, load_models, member_heads, member_results
from .job import pass_candidates, pixels, reference_of, reference_sample_of, sources
from .job_reports import ModelRun, job_result, job_texts, report_job
from .suite_reports import report_suite, suite_result
from .runtime.quiet import quiet_libraries
from .runtime.numerics import autocast_dtype, float32_mode, hardware_facts, policy_record, sdpa_backend
from .plan import EvalPlan
from .sources.preflight import check_shipped_data
from .reports.release import ReleaseError, check_before_pass
from .result import EvalResult, ManyEvalResult, Prediction, RunFacts, SuiteResult
from .sources.subset import samples_sha256


def run_plan(plan: EvalPlan) -> EvalResult | ManyEvalResult | SuiteResult:
    """Evaluate every model of the plan in one pass (one model: a job of one, :mod:`evaluate.job`); with
    ``data.suite``, on each test set of the file in turn (:func:`run_suite`). Lightning's banners, tips and warnings
    stay off the screen unless ``report.verbose`` (:mod:`evaluate.runtime.quiet`), for the CLI and the API alike.
    Every DataLoader worker of the run (the pass's, a cache build's) is forked safely beside torch's C++ threads
    (:mod:`evaluate.runtime.fork_guard`)."""
    from .runtime import fork_guard

    fork_guard.install()
    with quiet_libraries(plan.report.verbose):
        return _run_plan(plan)


def _run_plan(plan: EvalPlan) -> EvalResult | ManyEvalResult | SuiteResult:
    if plan.data.suite is not None:
        return run_suite(plan)
    started = utc_now()
    trainer, overrides, baseline = start(plan)  # device settings, output and release folders, the baseline
    src = sources(plan, plan.run.cache_dir)  # every model's folder and variant, the images; nothing loaded
    runs = evaluate_set(plan, started, trainer, overrides, baseline, src)
    output = Path(plan.report.output) if plan.report.output is not None else None
    on_rank_zero_then_together(trainer.is_global_zero, lambda: report_job(plan, src, runs, output))
    return job_result(src.members, [run.result for run in runs], output)


def run_suite(plan: EvalPlan) -> SuiteResult:
    """Every set of the suite file through the same path as a run of that data alone (:func:`evaluate_set`), one
    after another. The file, each set's plan and each set's data and labels are checked before any model is loaded;
    the reports (each set's in ``output/<set>/``, the suite's report.json beside them) are written as one unit at
    the end, and the verdict is the worst set's."""
    from .suite import read_suite, set_plans
    from .validation.trainer import make_trainer

    suite = read_suite(plan.data.suite)
    plans = set_plans(plan, suite)
    trainer, overrides, _ = start(plan)
    srcs = [sources(p) for _, p in plans]  # every set's data and labels, before any model is loaded
    results, texts = [], {}
    for i, ((name, p), src) in enumerate(zip(plans, srcs)):
        started = utc_now()
        runs = evaluate_set(p, started, trainer if i == 0 else make_trainer(p.run, p.report), overrides, None, src)
        results.append(job_result(src.members, [run.result for run in runs], p.report.output))
        texts.update({f"{name}/{file}": text for file, text in job_texts(src, runs).items()})
    output = Path(plan.report.output) if plan.report.output is not None else None
    result = suite_result(suite.name, [name for name, _ in plans], results, output)
    on_rank_zero_then_together(trainer.is_global_zero, lambda: report_suite(plan, result, texts))
    return result


def evaluate_set(plan: EvalPlan, started, trainer, overrides, baseline, src: Sources) -> list[ModelRun]:
    """The pass over one data set: every model of the plan loaded and run on the same batches, each model's
    results, record and verdict (:func:`model_run`). Nothing is written here."""
    from .validation.data_module import EvalDataModule
    from .validation.lightning_module import EvalModule
    from .validation.trainer import run_validation

    r = plan.run
    check_shipped_data(s.image_id for s in src.inputs.samples)
    if baseline is not None:  # the same ordered image list as the baseline's, before any model is loaded
        check_same_images(baseline, samples_sha256(src.inputs.samples))
        check_same_labels(baseline, src.inputs.samples, str(plan.data.source), src.inputs.source.layout)
        check_same_label_space(baseline, src.label_space.record())
    weights = hash_weights(src.members)  # beside the loading and the pass
    load_models(src.members, plan)
    sample = reference_sample_of(plan, src, weights)  # --reference-sample: proved, then chosen; before the pass
    transforms = pixels(src.members, plan)
    check_input_sizes(src.members, transforms)  # before torch.compile and the pass
    mixed = autocast_dtype(trainer.precision)
    candidates, heads = pass_candidates(src.members, plan, mixed)
    dataset = open_pixels(plan, src, transforms)
    batch_size, chunk = _batch_size(r, candidates, dataset.shapes, trainer, mixed, plan.report.summary)
    module = EvalModule(candidates, {key: t.normalization for key, t in transforms.items()}, src.classes,
                        reference=reference_of(src.members), skip_bad_images=plan.data.skip_bad_images,
                        label_space=src.label_space.keep,
                        pad_to=batch_size if r.compile else None, reference_chunk=chunk,
                        reference_on=sample.positions if sample else None, reference_batch=batch_size,
                        warm_shapes=dataset.shapes if r.compile else None,
                        on_compiled=_compiled_message(trainer, plan.report.summary, batch_size),
                        hparams=_hparams(plan, src, trainer) if plan.report.loggers else None)
    with float32_mode(r.tf32):  # the policy for the pass only; the reference switches to IEEE in _forward
        run_validation(trainer, module, EvalDataModule(dataset, batch_size, r.num_workers))

    output = Path(plan.report.output) if plan.report.output is not None else None
    if baseline is not None:  # the same images by content too (their bytes are known now)
        check_same_content(baseline, module.results["content"], [s.image_id for s in src.inputs.samples],
                           str(plan.data.source), src.inputs.source.layout)
    return [model_run(plan, trainer, src, m, module.results, transforms, member_heads(heads, m), overrides,
                      run_provenance(plan.report.command, started, weighed.result()), baseline, output,
                      sample.record if sample else None)
            for m, weighed in zip(src.members, weights)]


def start(plan: EvalPlan):
    """What is checked before any model or data is loaded: the Trainer (an impossible device setting fails fast),
    the environment's numerics overrides (warned about), the reports' folder, the release's folder and token, and
    an earlier run to compare with (its files read and checked). Returns (trainer, overrides, baseline)."""
    from .runtime.numerics import env_overrides, override_warnings
    from .reports.report import check_output
    from .validation.trainer import make_trainer

    trainer = make_trainer(plan.run, plan.report)
    overrides = env_overrides()
    if trainer.is_global_zero and plan.report.summary:
        for line in override_warnings(overrides, plan.run.tf32):
            print(line, file=sys.stderr)
    if plan.report.output is not None:
        check_output(Path(plan.report.output))  # the reports' folder is replaced whole at the end: usable?
    for entry in plan.models.entries:  # --update-card/--push-to-hub: a local, writable folder; a token
        check_before_pass(plan.report, entry.model)
    baseline = read_baseline(plan.report.baseline) if plan.report.baseline is not None else None
    return trainer, overrides, baseline


def open_pixels(plan: EvalPlan, src: Sources, transforms: dict):
    """The pass's dataset: the cache's pixels with ``run.cache_dir``, else the images decoded on the fly."""
    if plan.run.cache_dir is not None:
        from .pixels.cache import open_cache

        return open_cache(Path(plan.run.cache_dir), src.inputs.samples, transforms, source=src.inputs.source,
                          stamps=src.stamps)
    from .pixels.dataset import EvalDataset

    return EvalDataset(src.inputs.source, src.inputs.samples, transforms)


def model_run(plan: EvalPlan, trainer, src: Sources, m: Member, results: dict, transforms: dict, heads: list[str],
              overrides, provenance: dict, baseline, output: Path | None, sample: dict | None = None) -> ModelRun:
    """One model's share of the pass: its results, record (with the gate's verdict) and predictions, exactly what
    a run of it alone gives."""
    from .reports.report import build_record

    d, inputs = plan.data, src.inputs
    view = member_results(results, m)
    image_ids = [s.image_id for s in inputs.samples]
    primary, reference = m.candidates.primary, m.candidates.reference
    facts = run_facts(plan, trainer, inputs, m.spec.model, m.variant, m.folder.config, heads, overrides)
    full = (not inputs.is_subset and m.variant is not None
            and view["models"][primary].count == m.variant.reference.get("num_samples"))
    # the baseline's images are this run's (checked in run_plan); this model's predictions against it, image by image
    against = compare(baseline, view["rows"], image_ids, primary) if baseline is not None else None
    checks = judge(view, primary, reference, m.variant, full, against)  # the verdict's own step
    hf = transforms.get(m.keys.get("hf", ""))
    record = build_record(results=view, primary=primary, reference=reference, run=facts, variant=m.variant,
                          image_ids=image_ids, full=full, checks=checks,
                          image_processor=hf.describe() if hf is not None else None,
                          provenance=provenance, baseline=baseline, against=against)
    record["streaming"], record["data_revision"] = d.streaming, d.revision
    record["label_space"] = src.label_space.record()  # the classes every figure of the record is over
    if sample is not None:  # the original ran on a sample: which images, why so many, and the proof
        record["reference_sample"] = sample
    predictions = tuple(Prediction(image_ids[idx], label, {k: tuple(v) for k, v in top.items()})
                        for idx, label, top in view["rows"])
    return ModelRun(m, view, EvalResult(record, predictions, primary, reference, output))


def _compiled_message(trainer, summary: bool, batch_size: int):
    """What tells the compile's cost before the pass (rank 0, with the summary): one line on stderr."""
    if not (summary and trainer.is_global_zero):
        return None
    return lambda s: print(f"torch.compile: {s:.1f} s before the pass (every model, batches of {batch_size}; "
                           "paid once per process)", file=sys.stderr, flush=True)


def _hparams(plan: EvalPlan, src: Sources, trainer) -> dict:
    """The job's settings as the loggers' hyperparameters (plain values): one model's folder, variant and
    reference, or every model's folder."""
    d, r, members = plan.data, plan.run, src.members
    if len(members) == 1:
        m = members[0].spec
        which = {"model": str(m.model), "variant": members[0].variant.name if members[0].variant else None,
                 "reference": str(m.reference) if m.reference else None}
    else:
        which = {"models": [m.spec.model for m in members]}
    return {**which, "data": str(d.source), "images": len(src.inputs.samples),
            "subset": d.subset, "seed": d.seed, "preprocessing": d.preprocessing.value,
            "precision": str(trainer.precision), "attention": r.attention, "compile": bool(r.compile),
            "tf32": bool(r.tf32), "batch_size": r.batch_size, "world_size": trainer.world_size}


def run_facts(plan: EvalPlan, trainer, inputs, model: str, variant, config: dict, heads: list[str],
              overrides) -> RunFacts:
    """How one model's run was made (report.json's settings part): the same for a run alone and for each model of
    a several-models job, so that their records agree field for field."""
    d, r, samples = plan.data, plan.run, inputs.samples
    pre = variant.preprocessing if variant else None
    from .validation.trainer import cluster_environment

    return RunFacts(
        model=model,
        data=str(d.source),
        layout=inputs.source.layout,
        subset=len(samples) if inputs.is_subset else None,
        seed=d.seed if d.subset is not None else None,
        subset_sha256=samples_sha256(samples),
        img_size=pre.img_size if pre else None,
        crop_pct=pre.crop_pct if pre else None,
        interpolation=pre.interpolation if pre else None,
        preprocessing=d.preprocessing.value,
        precision=str(trainer.precision),
        attention=r.attention,
        compile=bool(r.compile),
        cache=str(r.cache_dir) if r.cache_dir is not None else None,
        devices=trainer.num_devices,
        world_size=trainer.world_size,
        num_nodes=trainer.num_nodes,
        cluster_environment=cluster_environment(trainer),
        numerics=policy_record(r.tf32, trainer.precision, heads, overrides),
        hardware=_hardware(trainer, r.attention, autocast_dtype(trainer.precision), config,
                           pre.img_size if pre else None),
    )


def on_rank_zero_then_together(is_global_zero: bool, work) -> None:
    """Rank 0 writes the reports; every other rank waits for its outcome and ends the same way. Launchers such
    as torchrun stop every process as soon as one exits with a non-zero status (a failed or not-made gate is
    one), so no rank may exit before rank 0 has written; and an error while writing is every rank's error."""
    import torch.distributed as dist

    from cvt_port.errors import BadInput, first_line

    error = None
    if is_global_zero:
        try:
            work()
        except BadInput as exc:
            error = ("bad input", str(exc))
        except ReleaseError as exc:
            error = ("release", str(exc))
        except Exception as exc:
            error = ("internal", f"rank 0 could not write the reports: {type(exc).__name__}: {first_line(exc)}")
            if not (dist.is_available() and dist.is_initialized()):
                raise
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        box = [error]
        dist.broadcast_object_list(box, src=0)
        error = box[0]
        # The run is over: close the group on every rank together. Left to the interpreter's exit, a rank whose
        # peer has already gone can abort (SIGABRT) in gloo's destructor instead of exiting with its status.
        dist.barrier()
        dist.destroy_process_group()
    if error is not None:
        kind, message = error
        if kind == "release":
            raise ReleaseError(message)
        raise BadInput(message) if kind == "bad input" else RuntimeError(message)


def _batch_size(r, candidates, shapes, trainer, mixed, summary: bool) -> tuple[int, int | None]:
    """The batch size and reference chunk of the pass; ``auto`` probes the device first (evaluate.validation.memory)."""
    if r.batch_size != "auto":
        return r.batch_size, r.reference_chunk
    from .validation.memory import auto_batch

    with float32_mode(r.tf32):
        batch, chunk = auto_batch(candidates, shapes, trainer.strategy.root_device, mixed)
    chunk = r.reference_chunk if r.reference_chunk is not None else chunk
    if summary and trainer.is_global_zero:
        print(f"batch size auto: {batch} per device on {trainer.strategy.root_device}"
              + (f" (the original in chunks of {chunk})" if chunk else ""), file=sys.stderr)
    return batch, chunk


def _hardware(trainer, attention: str, dtype, config: dict, img_size: int | None) -> dict:
    """The device, CUDA/cuDNN/NCCL versions and, with --attention sdpa, the kernel SDPA picks for the first
    stage's shapes (CvT: q over the stride-4 grid, k/v over the stride-8 grid, scale embed_dim ** -0.5)."""
    import torch

    facts = hardware_facts(trainer.strategy.root_device)
    facts["driver"] = cuda_driver_version() if facts["cuda"] else None
    facts["sdpa_backend"] = None
    if attention == "sdpa":
        dims, heads = config.get("embed_dim"), config.get("num_heads")
        if not (isinstance(dims, list) and isinstance(heads, list) and dims and heads):  # not a CvT config
            dims, heads = [64], [1]
        side = (img_size or 224) // 4
        facts["sdpa_backend"] = sdpa_backend(trainer.strategy.root_device, dtype or torch.float32,
                                             head_dim=dims[0] // heads[0], heads=heads[0], q_len=side * side,
                                             kv_len=(side // 2) ** 2, scale=dims[0] ** -0.5)
    return facts


def build_cache_for(plan: EvalPlan, cache_dir: Path, overwrite: bool = False) -> tuple[Path, int, list[str]]:
    """Decode and resize the plan's images once into ``cache_dir``, one preprocessing per distinct protocol of its
    models: (the cache, images, pixel keys)."""
    from .runtime.allocation import read_allocation

    alloc = read_allocation()  # before the data: an unusable launcher environment is found first
    with quiet_libraries(plan.report.verbose):
        src = sources(plan)
        return build_cache_of(plan, cache_dir, src.inputs, pixels(src.members, plan), alloc, overwrite)


def build_cache_of(plan: EvalPlan, cache_dir: Path, inputs, transforms: dict, alloc,
                   overwrite: bool = False) -> tuple[Path, int, list[str]]:
    """The cache of these images under these transforms. Under srun or torchrun (``alloc``) every process decodes
    its share and one assembles the cache (:mod:`evaluate.pixels.cache_parts`); the data flags are recorded with it, so
    that runs with the same flags take its image list instead of walking the data."""
    from .runtime.allocation import launch_id
    from .pixels.cache import build_cache
    from .pixels.cache_inputs import selection

    out = build_cache(Path(cache_dir), inputs.source, inputs.samples, transforms,
                      num_workers=plan.run.num_workers, skip_bad_images=plan.data.skip_bad_images,
                      rank=alloc.rank if alloc else 0, world_size=alloc.world_size if alloc else 1, launch=launch_id(),
                      selection=selection(plan.data, inputs), overwrite=overwrite)
    return out, len(inputs.samples), list(transforms)
