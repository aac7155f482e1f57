"""One evaluation run, following the plan one way: plan -> Trainer (device settings checked first) ->
model folder and variant -> data -> candidate models -> Lightning validate -> torchmetrics -> gate ->
reports. :func:`run_plan` returns an :class:`~evaluate.result.EvalResult`; it prints and writes only
what the plan's :class:`~evaluate.plan.ReportSpec` asks for."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cvt_port.provenance import cuda_driver_version, run_provenance, utc_now, weights_provenance

from .baseline import check_same_content, check_same_images, check_same_labels, compare, read_baseline
from .cache_inputs import run_inputs
from .candidates import build_candidates, tune_models
from .gate import judge
from .inputs import build_transforms, num_classes, prepare_data
from .models import inspect_folder, resolve_variant
from .numerics import (autocast_dtype, env_overrides, float32_head, float32_mode, hardware_facts, override_warnings,
                       policy_record, sdpa_backend)
from .plan import EvalPlan, PlanError
from .preflight import check_shipped_data
from .release import ReleaseError, check_before_pass, release
from .result import EvalResult, Prediction, RunFacts
from .subset import samples_sha256


def run_plan(plan: EvalPlan) -> EvalResult:
    from .dataset import EvalDataset
    from .lightning_module import EvalDataModule, EvalModule
    from .report import build_record, check_output, print_summary, write_reports
    from .trainer import make_trainer, run_validation

    m, d, r = plan.models, plan.data, plan.run
    started = utc_now()
    trainer = make_trainer(r, plan.report)  # before any loading: an impossible device setting fails fast
    overrides = env_overrides()
    if trainer.is_global_zero and plan.report.summary:
        for line in override_warnings(overrides, r.tf32):
            print(line, file=sys.stderr)
    if plan.report.output is not None:
        check_output(Path(plan.report.output))  # the reports' folder is replaced whole at the end: usable?
    check_before_pass(plan.report, m.model)  # --update-card/--push-to-hub: a local, writable folder; a token
    # an earlier run to compare with: its files are read and checked before any model or data is loaded
    baseline = read_baseline(plan.report.baseline) if plan.report.baseline is not None else None
    folder = inspect_folder(m.model)
    # the evaluated weights' sha256, read meanwhile (hashlib releases the GIL: a 1 GB file costs the pass nothing)
    hashing = ThreadPoolExecutor(1, thread_name_prefix="cvt-port-sha256")
    weights = hashing.submit(weights_provenance, folder.source, folder.is_local, folder.conversion_facts())
    hashing.shutdown(wait=False)
    variant = resolve_variant(m.config, folder)
    if m.reference is not None and not Path(m.reference).exists():
        raise PlanError("models.reference", "no such file", m.reference)
    # a bad data path, or labels the model does not have, are reported before any model is loaded
    # with a cache: the cache's own image list when it was built with these data flags (no walk)
    inputs, stamps = run_inputs(d, r.cache_dir, folder.label2id, num_classes(folder, variant))
    check_shipped_data(s.image_id for s in inputs.samples)
    if baseline is not None:  # the same ordered image list as the baseline's, before any model is loaded
        check_same_images(baseline, samples_sha256(inputs.samples))
        check_same_labels(baseline, inputs.samples, str(d.source), inputs.source.layout)
    candidates = build_candidates(m, plan.modes, folder, variant)
    variant = candidates.variant
    transforms = build_transforms(plan.modes, variant, folder, m.trust_remote_code)
    mixed = autocast_dtype(trainer.precision)
    heads = [c.name for c in candidates.models  # bf16/fp16-mixed: logits computed in float32 (before compile)
             if mixed is not None and c.kind != "reference" and float32_head(c.module)]
    tune_models(candidates, r.attention, r.compile)
    n_classes = num_classes(folder, variant)

    if r.cache_dir is not None:
        from .cache import open_cache

        dataset = open_cache(Path(r.cache_dir), inputs.samples, transforms, source=inputs.source, stamps=stamps)
    else:
        dataset = EvalDataset(inputs.source, inputs.samples, transforms)
    normalizations = {mode: t.normalization for mode, t in transforms.items()}
    batch_size, chunk = _batch_size(r, candidates, dataset.shapes, trainer, mixed, plan.report.summary)
    module = EvalModule(candidates.models, normalizations, n_classes, reference=candidates.reference,
                        skip_bad_images=d.skip_bad_images, pad_to=batch_size if r.compile else None,
                        hparams=_hparams(plan, variant, len(inputs.samples), trainer) if plan.report.loggers else None,
                        reference_chunk=chunk)
    with float32_mode(r.tf32):  # the policy for the pass only; the reference switches to IEEE in _forward
        run_validation(trainer, module, EvalDataModule(dataset, batch_size, r.num_workers))

    results = module.results
    samples, primary, reference = inputs.samples, candidates.primary, candidates.reference
    image_ids = [s.image_id for s in samples]
    facts = run_facts(plan, trainer, inputs, m.model, variant, folder.config, heads, overrides)
    full = (not inputs.is_subset and variant is not None
            and results["models"][primary].count == variant.reference.get("num_samples"))
    against = None
    if baseline is not None:  # the same images by content too (their bytes are known now), then image by image
        check_same_content(baseline, results["content"], image_ids, str(d.source), inputs.source.layout)
        against = compare(baseline, results["rows"], image_ids, primary)
    checks = judge(results, primary, reference, variant, full, against)  # the verdict's own step
    hf_transform = transforms.get("hf")
    record = build_record(results=results, primary=primary, reference=reference, run=facts,
                          variant=variant, image_ids=image_ids, full=full, checks=checks,
                          image_processor=hf_transform.describe() if hf_transform is not None else None,
                          provenance=run_provenance(plan.report.command, started, weights.result()),
                          baseline=baseline, against=against)
    record["streaming"], record["data_revision"] = d.streaming, d.revision
    output = Path(plan.report.output) if plan.report.output is not None else None

    def report() -> None:
        if output is not None:
            class_names = [folder.config.get("id2label", {}).get(str(i), str(i)) for i in range(n_classes)]
            write_reports(output, record, results, image_ids, primary, reference, class_names)
        if plan.report.summary:
            print_summary(record, output if output is not None else Path("-"))
        # after a PASSED gate only: results on the card, the upload (rank 0, after the reports are written)
        for line in release(plan.report, m.model, record, output, d.split, variant, primary):
            if plan.report.summary:
                print(line)

    on_rank_zero_then_together(trainer.is_global_zero, report)
    predictions = tuple(Prediction(image_ids[idx], label, {k: tuple(v) for k, v in top.items()})
                        for idx, label, top in results["rows"])
    return EvalResult(record, predictions, primary, reference, output)


def _hparams(plan: EvalPlan, variant, images: int, trainer) -> dict:
    """The run's settings as the loggers' hyperparameters (plain values)."""
    m, d, r = plan.models, plan.data, plan.run
    return {"model": str(m.model), "variant": variant.name if variant else None,
            "reference": str(m.reference) if m.reference else None, "data": str(d.source), "images": images,
            "subset": d.subset, "seed": d.seed, "preprocessing": d.preprocessing.value,
            "precision": str(trainer.precision), "attention": r.attention, "compile": bool(r.compile),
            "tf32": bool(r.tf32), "batch_size": r.batch_size, "world_size": trainer.world_size}


def run_facts(plan: EvalPlan, trainer, inputs, model: str, variant, config: dict, heads: list[str],
              overrides) -> RunFacts:
    """How one model's run was made (report.json's settings part): the same for a run alone and for each model of
    a several-models job (:mod:`evaluate.several_models`), so that their records agree field for field."""
    d, r, samples = plan.data, plan.run, inputs.samples
    pre = variant.preprocessing if variant else None
    from .trainer import cluster_environment

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
        from .peers import collective_failed

        box = [error]
        try:
            dist.broadcast_object_list(box, src=0)
            error = box[0]
            # The run is over: close the group on every rank together. Left to the interpreter's exit, a rank whose
            # peer has already gone can abort (SIGABRT) in gloo's destructor instead of exiting with its status.
            dist.barrier()
        except RuntimeError as exc:  # a peer died (evaluate.peers): one line, exit 3
            raise collective_failed(exc) from None
        dist.destroy_process_group()
    if error is not None:
        kind, message = error
        if kind == "release":
            raise ReleaseError(message)
        raise BadInput(message) if kind == "bad input" else RuntimeError(message)


def _batch_size(r, candidates, shapes, trainer, mixed, summary: bool) -> tuple[int, int | None]:
    """The batch size and reference chunk of the pass; ``auto`` probes the device first (evaluate.memory)."""
    if r.batch_size != "auto":
        return r.batch_size, r.reference_chunk
    from .memory import auto_batch

    with float32_mode(r.tf32):
        batch, chunk = auto_batch(candidates.models, shapes, trainer.strategy.root_device, mixed)
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
    """Decode and resize the plan's images once into ``cache_dir``: (the cache, images, modes)."""
    from .allocation import read_allocation

    alloc = read_allocation()  # before the data: an unusable launcher environment is found first
    folder = inspect_folder(plan.models.model)
    variant = resolve_variant(plan.models.config, folder)
    inputs = prepare_data(plan.data, folder.label2id, num_classes(folder, variant))
    transforms = build_transforms(plan.modes, variant, folder, plan.models.trust_remote_code)
    return build_cache_of(plan, cache_dir, inputs, transforms, alloc, overwrite)


def build_cache_of(plan: EvalPlan, cache_dir: Path, inputs, transforms: dict, alloc,
                   overwrite: bool = False) -> tuple[Path, int, list[str]]:
    """The cache of these images under these transforms. Under srun or torchrun (``alloc``) every process decodes
    its share and one assembles the cache (:mod:`evaluate.cache_parts`); the data flags are recorded with it, so
    that runs with the same flags take its image list instead of walking the data."""
    from .allocation import launch_id
    from .cache import build_cache
    from .cache_inputs import selection

    out = build_cache(Path(cache_dir), inputs.source, inputs.samples, transforms,
                      num_workers=plan.run.num_workers, skip_bad_images=plan.data.skip_bad_images,
                      rank=alloc.rank if alloc else 0, world_size=alloc.world_size if alloc else 1, launch=launch_id(),
                      selection=selection(plan.data, inputs), overwrite=overwrite)
    return out, len(inputs.samples), list(transforms)
