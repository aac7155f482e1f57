"""``python -m evaluate``: top-1/top-5 of a converted CvT (and its original) on ImageNet validation data.

The CLI is a thin layer over :mod:`evaluate.api`: it parses the flags once into a typed
:class:`~evaluate.plan.EvalPlan` (or the bundled demo's plan when no model, data or reference is
given), runs it, and maps the outcome to an exit status (:class:`cvt_port.errors.ExitStatus`):
the gate's verdict (0 pass, 1 fail, 3 not made), bad input (2, one line naming the flag), an
interrupt (130 SIGINT, 143 SIGTERM; no report), anything unexpected (4, the traceback in a file).
Parsed arguments never leave this module.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from cvt_port.errors import EXIT_STATUS_HELP, BadInput, ExitStatus, internal_error

from .plan import (ATTENTIONS, LABEL_SPACES, DEFAULT_OUTPUT, DataSpec, EvalPlan, ModelEntry, ModelSpec, PlanError, Preprocessing, ReportSpec,
                   RunSpec, default_num_workers, name_fields)
from .plan import DEFAULT_LOG_DIR, LOGGERS
from .plan_values import plan_parts as plan_parts_of
from .runtime.quiet import quiet_libraries

PROGRAM = "python -m evaluate"

# plan field -> the flag that sets it (how a PlanError is shown on the command line)
FLAGS = {
    "models.model": "--model", "models.config": "--config", "models.reference": "--reference",
    "models.reference_sample": "--reference-sample", "models.stock": "--stock", "models.with_stock": "--with-stock",
    "models.trust_remote_code": "--trust-remote-code",
    "data.source": "--data", "data.labels_file": "--labels-file", "data.split": "--split",
    "data.image_column": "--image-column", "data.label_column": "--label-column",
    "data.label_numbering": "--label-numbering", "data.devkit_map": "--devkit-map", "data.subset": "--subset",
    "data.label_space": "--label-space",
    "data.seed": "--seed", "data.subset_file": "--subset-file", "data.preprocessing": "--preprocessing",
    "data.skip_bad_images": "--skip-bad-images",
    "data.streaming": "--streaming", "data.revision": "--data-revision", "data.suite": "--suite",
    "run.batch_size": "--batch-size", "run.num_workers": "--num-workers", "run.accelerator": "--accelerator",
    "run.devices": "--devices", "run.num_nodes": "--num-nodes", "run.strategy": "--strategy",
    "run.precision": "--precision", "run.cache_dir": "--cache-dir", "run.attention": "--attention",
    "run.compile": "--compile", "run.tf32": "--tf32", "report.output": "--output",
    "report.update_card": "--update-card", "report.push_to_hub": "--push-to-hub", "report.create_pr": "--create-pr",
    "report.private": "--private", "report.revision": "--revision",
    "report.loggers": "--logger", "report.log_dir": "--log-dir",
    "report.baseline": "--baseline",
    "run.reference_chunk": "--reference-chunk",
    "models.models_file": "--models-file",  # a several-models job: --model repeated, or a models file
    "report.summary": "--summary", "report.verbose": "--verbose",
}


def flag(field: str) -> str:
    """The flag that sets a plan field (the field itself when no flag does)."""
    return FLAGS.get(field, field)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROGRAM,
        description="Evaluate a converted CvT (and optionally the original .pth, on the same batches) on an "
        "ImageNet-style validation set, and gate the release. With no arguments: the bundled end-to-end demo. "
        + EXIT_STATUS_HELP,
        epilog="Repeated runs: `python -m evaluate cache build --cache-dir DIR [the same model/config/data/subset/"
        "preprocessing flags]` decodes and resizes once; then pass --cache-dir DIR.",
    )
    g = p.add_argument_group("what to evaluate")
    g.add_argument("--config", metavar="VARIANT", help="variant name or configs/<variant>.yaml (preprocessing, "
                   "reference accuracy, gate); default: the variant recorded in the model folder's conversion.json")
    g.add_argument("--model", metavar="DIR|HUB_ID", action="append", help="converted folder (loaded with "
                   "cvt_port.load_model), or any Hugging Face image-classification folder or Hub id; repeat it to "
                   "evaluate several models on the same batches (a table, a record and a verdict per model; the exit "
                   "status is the worst verdict)")
    g.add_argument("--models-file", metavar="FILE", help="several models: one 'FOLDER' or 'FOLDER CONFIG' per line "
                   "(after any --model); a line's CONFIG wins over --config, which applies to the other models")
    g.add_argument("--stock", action="store_true", help="load --model with the stock CvtForImageClassification (exact "
                   "GELU) instead of cvt_port.load_model (QuickGELU, as the original)")
    g.add_argument("--with-stock", action="store_true", help="also evaluate the stock class as an extra row")
    g.add_argument("--trust-remote-code", action="store_true", help="let a model folder or Hub repository run its "
                   "own code (auto_map) for its model and image processor; without it, never (stock classes). A folder "
                   "cvt_port wrote is served by cvt_port's own classes (its files' hashes are checked), not its copy")
    g.add_argument("--reference", metavar="PTH", help="original release .pth: evaluated through the reference "
                   "implementation on the very same batches, and compared image by image")
    g.add_argument("--reference-sample", action="store_true", default=None, help="with --reference: run the "
                   "original only on the seeded sample the paired checks need (459 images at the default gate), "
                   "the converted model on every image; only when conversion.json's parity record and the weights' "
                   "sha256 prove the converted weights are the original's (else exit 2)")
    d = p.add_argument_group("data")
    d.add_argument("--data", metavar="PATH|HUB_ID", help="ImageFolder val/<wnid>/*.JPEG, a flat ILSVRC2012_val_* folder "
                   "with a labels file, a datasets folder/parquet, WebDataset .tar shards (a file, a folder, a glob or "
                   "'val-{000000..000063}.tar'), or a Hub dataset id")
    d.add_argument("--labels-file", metavar="FILE", help="labels for a flat folder: LOC_val_solution.csv, or one "
                   "WordNet id or class index per line")
    d.add_argument("--split", default="validation", help="dataset split for datasets/Hub data (default: validation)")
    d.add_argument("--image-column", help="image column of a datasets dataset (default: auto)")
    d.add_argument("--label-column", help="label column of a datasets dataset (default: auto)")
    d.add_argument("--label-numbering", choices=("index0", "devkit"), help="what class numbers in a labels file or "
                   "class-folder names (ImageNet-V2's 0..999) mean: index0 = 0-based position among the 1000 sorted WordNet ids; devkit = the ILSVRC2012 devkit's "
                   "1-based ids (needs --devkit-map). Required when the labels are numbers")
    d.add_argument("--devkit-map", metavar="FILE", help="with --label-numbering devkit: 1000 lines "
                   "'<ILSVRC2012_ID> <WNID>', the synset table of the devkit's data/meta.mat")
    d.add_argument("--label-space", choices=LABEL_SPACES, help="the classes the images are scored over: the logits of "
                   "the model's other classes are masked before top-1/top-5, agreement and flips. full: all the model's "
                   "classes; imagenet-a, imagenet-r: their 200 ImageNet-1k classes; data: the classes present in the data "
                   "(default: imagenet-a or imagenet-r when the data's classes are exactly theirs, else full)")
    d.add_argument("--subset", type=int, metavar="N", help="evaluate a deterministic class-balanced subset of N images")
    d.add_argument("--seed", type=int, default=0, help="seed of the --subset choice (default: 0)")
    d.add_argument("--subset-file", metavar="FILE", help="evaluate exactly these image ids (one per line)")
    d.add_argument("--preprocessing", choices=[p.value for p in Preprocessing], default=Preprocessing.RELEASE.value,
                   help="release: the release's evaluation rules (default); hf: the model folder's image processor; "
                   "both: the converted model under each, in the same pass")
    d.add_argument("--skip-bad-images", action="store_true", help="count and report unreadable images instead of failing")
    d.add_argument("--streaming", action="store_true", help="read parquet, WebDataset shards or a Hub dataset as a "
                   "stream: labels first, then only the chosen images are decoded; nothing is downloaded whole")
    d.add_argument("--data-revision", metavar="REV", help="with --streaming: the Hub dataset's commit, tag or branch")
    d.add_argument("--suite", metavar="FILE", help="several test sets in one job, instead of --data and the other data "
                   "flags: a YAML file of sets (data, subset, labels, recorded top-1, gate tolerances per set); each "
                   "set's reports in OUTPUT/<set>/, one record per set in report.json, the worst verdict as the exit "
                   "status")
    r = p.add_argument_group("how to run")
    r.add_argument("--batch-size", type=batch_size, default=64, help="images per batch and device (default: 64), or "
                   "auto: the largest power of two that fits the device, found by probe batches before the pass")
    r.add_argument("--reference-chunk", type=int, metavar="N", help="run the original (--reference) N images at a "
                   "time, so it needs no more memory than the converted model (same results; default: whole batches)")
    r.add_argument("--num-workers", type=int, default=default_num_workers(),
                   help="DataLoader worker processes per device for decoding and resizing (default: the CPUs this "
                   "process may use, SLURM_CPUS_PER_TASK or its affinity, per device on this node, at most 8)")
    r.add_argument("--accelerator", default="auto", help="cpu, gpu, auto (Lightning; default: auto)")
    r.add_argument("--devices", default="auto", help="number of devices per node or 'auto' (Lightning; under srun/torchrun "
                   "'auto' is the processes the launcher started per node, and a count that contradicts it is refused)")
    r.add_argument("--num-nodes", type=int, default=None, help="number of nodes (Lightning; default: the allocation's "
                   "under srun/torchrun, else 1; a value that contradicts it is refused)")
    r.add_argument("--strategy", default="auto", help="Lightning strategy, e.g. ddp (default: auto); ddp_spawn/ddp_fork "
                   "are refused (the pass would run in child processes whose results do not come back)")
    r.add_argument("--precision", default="32-true", help="Lightning precision: 32-true (default), bf16-mixed, 16-mixed "
                   "(*-true casts would cast the original too and are refused)")
    r.add_argument("--cache-dir", metavar="DIR", help="read preprocessed pixels from this cache (made by "
                   "`python -m evaluate cache build ... --cache-dir DIR`); refused if built for other images or settings")
    r.add_argument("--attention", choices=ATTENTIONS, default="einsum",
                   help="attention of the Hugging Face models: einsum (as transformers) or fused "
                   "scaled_dot_product_attention with the CvT scale (default: einsum)")
    r.add_argument("--compile", action="store_true",
                   help="torch.compile every model before the pass (a short last batch is padded: one graph, no recompilation)")
    r.add_argument("--tf32", action="store_true",
                   help="TF32 convolutions and matmuls on Ampere+ GPUs for the converted model (default: IEEE float32; "
                   "the original always runs in IEEE float32)")
    r.add_argument("--output", metavar="DIR", help=f"where reports go (default: ./{DEFAULT_OUTPUT}/)")
    r.add_argument("--logger", action="append", metavar="NAME", help=f"also send the final figures and the run's "
                   f"settings to Lightning's logger(s): {', '.join(LOGGERS)}; repeat the flag or give a comma list "
                   "(tensorboard needs tensorboardX or tensorboard, wandb and mlflow their packages)")
    r.add_argument("--log-dir", metavar="DIR", default=str(DEFAULT_LOG_DIR), help="where csv and tensorboard logs "
                   f"go, one version_N folder per run (default: ./{DEFAULT_LOG_DIR}/; wandb and mlflow also use it "
                   "unless their own settings say otherwise); not in --output, which holds one run's reports")
    r.add_argument("--baseline", metavar="DIR", help="an earlier run's --output folder: compare with its predictions "
                   "image by image (same images required), list the images whose top-1 changed (flipped.csv), and "
                   "fail the gate on a regression (gate.baseline_top1_tolerance, gate.baseline_max_flipped)")
    r.add_argument("--summary", action=argparse.BooleanOptionalAction, default=None, help="print the summary (the "
                   "table, the checks and the GATE line) on stdout (default); --no-summary: only the progress bar and "
                   "errors, the exit status gives the verdict")
    r.add_argument("--verbose", action="store_true", default=None, help="show Lightning's and transformers' own "
                   "messages (banners, tips, warnings, loading bars)")
    rel = p.add_argument_group("release (only after the gate PASSED; on fail, not made or error: nothing)")
    rel.add_argument("--update-card", action="store_true", help="write the measured results into the model "
                     "folder's README.md as model-index (a local folder; its other card data are kept)")
    rel.add_argument("--push-to-hub", metavar="REPO", help="upload the model folder, its card with the results and "
                     "the reports (under eval/) to this Hub repo in one commit (needs a token; exit 3 if the upload "
                     "fails after a pass)")
    rel.add_argument("--create-pr", action="store_true", help="with --push-to-hub: open a pull request instead of "
                     "committing to the branch")
    rel.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    rel.add_argument("--revision", metavar="BRANCH", help="with --push-to-hub: commit to (or open the pull request "
                     "against) this branch, created if need be (default: main)")
    return p


def batch_size(text: str) -> int | str:
    """``--batch-size``: a number of images or ``auto`` (argparse names this function in its error)."""
    return "auto" if text == "auto" else int(text)


# plan fields that no flag sets, and why
NOT_FLAGS = {"models.extra_models": "several models are --model repeated or --models-file",
             "report.command": "the command line itself is recorded as the command",
             "data.gate": "a data set's own gate is given per set in a --suite file"}


def plan_parts(args: argparse.Namespace) -> tuple[ModelSpec, DataSpec, RunSpec, ReportSpec]:
    """The flags, once, as the plan's typed parts: each field from its flag (:data:`FLAGS`, a flag not given leaves
    the plan's default), the job's models from every ``--model`` then the ``--models-file`` lines."""
    values = {field: getattr(args, dest(option)) for field, option in FLAGS.items() if field != "models.model"}
    if args.model:
        values["models.model"] = [ModelEntry(m, args.config) for m in args.model]
    return plan_parts_of({k: v for k, v in values.items() if v is not None})


def dest(option: str) -> str:
    """Where argparse keeps a long option's value: ``--data-revision`` -> ``data_revision``."""
    return option.lstrip("-").replace("-", "_")


def command_line(argv: list[str]) -> str:
    """The command as a shell would take it again (report.json's provenance)."""
    import shlex

    return " ".join([PROGRAM, *map(shlex.quote, argv)])


def is_demo(args: argparse.Namespace) -> bool:
    """No model, data or reference given: the bundled demo."""
    return (args.model is None and args.models_file is None and args.data is None and args.reference is None
            and args.suite is None)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["cache"]:
        return cache_main(argv[1:])
    args = build_parser().parse_args(argv)
    quiet_native_logs(args.verbose)

    def work() -> int:
        models, data, run, report = plan_parts(args)
        report = dataclasses.replace(report, command=command_line(argv))
        plan = None if is_demo(args) else EvalPlan(models, data, run, report)
        check_launch(run)  # before torch, Lightning and transformers are imported: a refusal comes first
        with quiet_libraries(args.verbose):  # the demo's conversion too: before the plan runs
            if plan is None:
                from .default import demo_plan

                plan = demo_plan(data, run, report)
            from .api import run_plan

            return int(run_plan(plan).exit_status)

    return outcome(work)


def check_launch(run: RunSpec) -> None:
    """The launcher's processes against the device flags (:func:`evaluate.runtime.allocation.resolve_devices`), read
    from the environment alone, before anything heavy is imported: a refusal (a flag that contradicts the allocation,
    SLURM's batch script without ``srun``) is one line within about the time of ``import torch``, not after Lightning
    and transformers have loaded (seconds more on a busy node). The run makes the same check again, for the API."""
    from .runtime.allocation import resolve_devices

    resolve_devices(run)


def quiet_native_logs(verbose: bool) -> None:
    """Keep torch's C++ warnings (c10d's ``recvValue failed ... Connection was likely closed`` with its C++ trace,
    when another process of the launch dies) off the terminal: its level is read once, when torch is imported,
    so it is set before. A level the user set is kept; --verbose shows them."""
    import os

    if not verbose:
        os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")


def outcome(work) -> int:
    """Run ``work`` and map how it ended to the exit status (the contract in :mod:`cvt_port.errors`)."""
    from .runtime.interrupts import Interrupted, sigterm_raises
    from .runtime.peers import PeerDied
    from .reports.release import ReleaseError

    try:
        with sigterm_raises():
            return work()
    except PlanError as exc:
        print(f"error: {exc.render(flag)}", file=sys.stderr)
        return ExitStatus.BAD_INPUT
    except BadInput as exc:  # a hint in it may name a plan field: shown as its flag
        print(f"error: {name_fields(str(exc), flag)}", file=sys.stderr)
        return ExitStatus.BAD_INPUT
    except Interrupted as exc:
        print(f"interrupted: {exc}", file=sys.stderr)
        return exc.exit_status
    except ReleaseError as exc:  # the gate passed, the upload did not happen
        print(f"error: {name_fields(str(exc), flag)}", file=sys.stderr)
        return exc.exit_status
    except PeerDied as exc:  # another process of the launch died: no verdict (exit 3)
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print("interrupted: SIGINT: stopped before the gate's verdict; no report written", file=sys.stderr)
        return ExitStatus.INTERRUPTED
    except Exception as exc:
        return internal_error(exc, PROGRAM)


def cache_main(argv: list[str]) -> int:
    """``python -m evaluate cache COMMAND ...``: dispatch on the cache command (see CACHE_COMMANDS)."""
    command = argv[0] if argv else None
    if command not in CACHE_COMMANDS:
        parser = build_parser()
        parser.prog = f"{PROGRAM} cache"
        parser.error(f"choose a cache command: {', '.join(CACHE_COMMANDS)}")
    return CACHE_COMMANDS[command](argv[1:])


def cache_build(argv: list[str]) -> int:
    """``python -m evaluate cache build --cache-dir DIR [the run's model, data, subset and preprocessing flags]``."""
    parser = build_parser()
    parser.prog = f"{PROGRAM} cache build"
    parser.description = ("Decode and resize a data set once into memory-mappable uint8 files keyed by the "
                          "preprocessing settings and the image list; later runs read it with --cache-dir DIR.")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace what the cache folder holds (a cache of other images or settings); without it "
                        "such a folder is refused")
    args = parser.parse_args(argv)
    quiet_native_logs(args.verbose)

    def work() -> int:
        if not args.cache_dir:
            raise PlanError("run.cache_dir", "cache build needs a cache folder")
        models, data, run, report = plan_parts(args)
        check_launch(run)
        from .api import build_cache_for

        out, n, modes = build_cache_for(EvalPlan(models, data, run, report), Path(args.cache_dir), args.overwrite)
        print(f"cache of {n} images ({', '.join(modes)}) at {out}")
        return ExitStatus.PASS

    return outcome(work)


def cache_verify(argv: list[str]) -> int:
    """``python -m evaluate cache verify --cache-dir DIR``: every image and file against its checksum."""
    parser = argparse.ArgumentParser(prog=f"{PROGRAM} cache verify",
                                     description="Check every image and file of a cache against its checksums. "
                                     "Exit status: 0 intact, 1 damaged entries, 2 not a cache.")
    parser.add_argument("--cache-dir", metavar="DIR", required=True, help="the cache folder to check")
    args = parser.parse_args(argv)

    def work() -> int:
        from .pixels.cache import verify_cache

        report = verify_cache(args.cache_dir)
        print("\n".join(report.lines()))
        return ExitStatus.PASS if report.intact else ExitStatus.FAIL

    return outcome(work)


CACHE_COMMANDS = {"build": cache_build, "verify": cache_verify}

if __name__ == "__main__":
    sys.exit(main())
