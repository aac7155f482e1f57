"""One evaluation run: resolve the flags into a variant, data, candidates and a Trainer, then report."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from cvt_port.errors import BadInput
from cvt_port.hf import quiet_transformers

from .dataset import EvalDataset
from .layouts import discover
from .models import Candidate, inspect_folder, load_hf, load_reference, resolve_variant
from .preprocess import HFTransform, ReleaseTransform
from .subset import read_subset_file, samples_sha256, select_subset


def build_candidates(args, folder, variant):
    """The models of the side-by-side pass, the primary first: (candidates, primary, reference, variant, modes).
    With --reference the variant may be read off the original weights when no --config gave it."""
    modes = _modes(args)
    base_mode = modes[0]
    candidates = []
    reference = None
    if args.reference:
        module, variant = load_reference(args.reference, variant)
        reference = "original"
        candidates.append(Candidate(reference, "reference", module, base_mode))
    if args.stock:
        primary_kind, primary = "stock", "stock"
    elif folder.is_cvt:
        primary_kind, primary = "exact", "converted"
    else:
        primary_kind, primary = "auto", "model"
    primary_module = load_hf(folder, primary_kind)
    candidates.insert(0, Candidate(primary, primary_kind, primary_module, base_mode))
    if "hf" in modes[1:]:
        candidates.append(Candidate(f"{primary} (hf)", primary_kind, primary_module, "hf"))
    if getattr(args, "with_stock", False) and primary_kind != "stock":
        candidates.append(Candidate("stock", "stock", load_hf(folder, "stock"), base_mode))
    return candidates, primary, reference, variant, modes


def tune_models(candidates, args) -> None:
    """--attention and --compile, applied to every candidate (the reference keeps its einsum: it is the
    ground truth; sdpa applies to the Hugging Face models)."""
    from cvt_port.attention import set_attention

    for c in candidates:
        if c.kind != "reference":
            set_attention(c.module, args.attention)
        if args.compile:
            c.module = torch.compile(c.module)


def build_transforms(modes, variant, folder):
    transforms = {}
    for mode in modes:
        if mode == "release":
            if variant is None:
                raise BadInput("--config is required: the model folder records no cvt_port variant "
                               "(or use --preprocessing hf to run the folder's own image processor)")
            transforms["release"] = ReleaseTransform(variant.preprocessing)
        else:
            from transformers import AutoImageProcessor

            try:
                with quiet_transformers():
                    proc = AutoImageProcessor.from_pretrained(folder.source)
            except Exception as exc:
                raise BadInput(f"--preprocessing hf: {folder.source} has no usable image processor "
                               f"({type(exc).__name__}); use --preprocessing release") from None
            transforms["hf"] = HFTransform(proc)
    return transforms


def choose_samples(args, source):
    if args.subset_file:
        return read_subset_file(args.subset_file, source.samples), True
    if args.subset is not None:
        if args.subset <= 0:
            raise BadInput(f"--subset {args.subset}: give a positive number of images")
        return select_subset(source.samples, args.subset, args.seed), args.subset < len(source.samples)
    return list(source.samples), False


def check_args(args) -> None:
    if not args.model:
        raise BadInput("--model is required (a converted folder or Hub id); run with no arguments for the bundled demo")
    if not args.data:
        raise BadInput("--data is required (an ImageNet validation folder, labels, or dataset)")
    if args.batch_size <= 0 or args.num_workers < 0:
        raise BadInput("--batch-size must be positive and --num-workers not negative")


def prepare_data(args, folder, variant):
    """(source, samples, is_subset): a bad data path is reported before any model is loaded."""
    source = discover(args.data, label2id=folder.label2id, labels_file=args.labels_file, split=args.split,
                      image_column=args.image_column, label_column=args.label_column,
                      label_numbering=args.label_numbering, devkit_map=args.devkit_map)
    samples, is_subset = choose_samples(args, source)
    return source, samples, is_subset


def _modes(args) -> list[str]:
    return ["release", "hf"] if args.preprocessing == "both" else [args.preprocessing]


def build_cache_command(args) -> int:
    from .cache import build_cache

    check_args(args)
    folder = inspect_folder(args.model)
    variant = resolve_variant(args.config, folder)
    source, samples, _ = prepare_data(args, folder, variant)
    transforms = build_transforms(_modes(args), variant, folder)
    out = build_cache(Path(args.cache_dir), source, samples, transforms, num_workers=args.num_workers,
                      skip_bad_images=args.skip_bad_images)
    print(f"cache of {len(samples)} images ({', '.join(transforms)}) at {out}")
    return 0


def run(args: argparse.Namespace) -> int:
    import lightning as L

    from .lightning_module import EvalDataModule, EvalModule
    from .report import build_record, check_output, print_summary, write_reports

    check_args(args)
    trainer = make_trainer(L, args)  # before any loading: an impossible device setting fails fast
    folder = inspect_folder(args.model)
    variant = resolve_variant(args.config, folder)
    if args.reference and not Path(args.reference).exists():
        raise BadInput(f"--reference {args.reference}: no such file")
    check_output(Path(args.output or "cvt-port-output"))  # the reports' folder is replaced whole at the end
    source, samples, is_subset = prepare_data(args, folder, variant)
    candidates, primary, reference, variant, modes = build_candidates(args, folder, variant)
    transforms = build_transforms(modes, variant, folder)
    tune_models(candidates, args)
    num_classes = int(folder.config.get("num_labels") or len(folder.config.get("id2label") or {}) or
                      (variant.architecture.num_classes if variant else 0))
    bad_label = next((s for s in samples if not 0 <= s.label < num_classes), None)
    if bad_label is not None:
        raise BadInput(f"{bad_label.image_id}: label {bad_label.label} is outside the model's {num_classes} classes")

    if args.cache_dir:
        from .cache import open_cache

        dataset = open_cache(Path(args.cache_dir), samples, transforms, source=source)
    else:
        dataset = EvalDataset(source, samples, transforms)
    normalizations = {mode: t.normalization for mode, t in transforms.items()}
    module = EvalModule(candidates, normalizations, num_classes, reference=reference,
                        skip_bad_images=args.skip_bad_images, pad_to=args.batch_size if args.compile else None)
    dm = EvalDataModule(dataset, args.batch_size, args.num_workers)
    trainer.validate(module, datamodule=dm, verbose=False)

    results = module.results

    image_ids = [s.image_id for s in samples]
    pre = variant.preprocessing if variant else None
    run_info = {
        "model": args.model,
        "data": str(args.data),
        "layout": source.layout,
        "subset": len(samples) if is_subset else None,
        "seed": args.seed if args.subset is not None else None,
        "subset_sha256": samples_sha256(samples),
        "img_size": pre.img_size if pre else None,
        "crop_pct": pre.crop_pct if pre else None,
        "interpolation": pre.interpolation if pre else None,
        "preprocessing": args.preprocessing,
        "precision": str(trainer.precision),
        "attention": args.attention,
        "compile": bool(args.compile),
        "cache": str(args.cache_dir) if args.cache_dir else None,
        "devices": trainer.num_devices,
        "world_size": trainer.world_size,
        "cluster_environment": _cluster_environment(trainer),
    }
    full = (not is_subset and variant is not None
            and results["models"][primary].count == variant.reference.get("num_samples"))
    record = build_record(results=results, primary=primary, reference=reference, run=run_info,
                          variant=variant, image_ids=image_ids, full=full)
    if trainer.is_global_zero:
        output = Path(args.output or "cvt-port-output")
        class_names = [folder.config.get("id2label", {}).get(str(i), str(i)) for i in range(num_classes)]
        write_reports(output, record, results, image_ids, primary, reference, class_names)
        print_summary(record, output)
    return 0 if record["gate"] == "pass" else 1


def make_trainer(L, args):
    """Lightning's Trainer; a device/strategy/precision it cannot provide is bad input (exit 2)."""
    try:
        return L.Trainer(
            accelerator=args.accelerator,
            devices=_devices(args.devices),
            num_nodes=args.num_nodes,
            strategy=args.strategy,
            precision=args.precision,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            use_distributed_sampler=False,  # ShardSampler: every image exactly once
            inference_mode=True,
        )
    except Exception as exc:  # MisconfigurationException, ValueError, RuntimeError from Lightning's checks
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise BadInput(f"--accelerator/--devices/--num-nodes/--strategy/--precision: {first}") from None


def _cluster_environment(trainer) -> str | None:
    """How Lightning found its processes (SLURMEnvironment, TorchElasticEnvironment, ...); single-device
    strategies keep it on the accelerator connector only."""
    env = getattr(trainer.strategy, "cluster_environment", None)
    if env is None:
        env = getattr(getattr(trainer, "_accelerator_connector", None), "cluster_environment", None)
    return type(env).__name__ if env is not None else None


def _devices(value: str):
    if value == "auto":
        return "auto"
    try:
        return int(value)
    except ValueError:
        return value
