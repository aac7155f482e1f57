"""The models of a job, one or several, from their sources to what each gets back of the one pass.

A job evaluates ``plan.models.entries`` (one entry is a run of one model) on the very same batches, and each
model gets the record, verdict and predictions a run of it alone would give.

**Images read once.** Each image is decoded once for the whole job. Models whose preprocessing is the same
(the same release settings: size, crop, interpolation, normalisation; or the same image processor) share its
pixels; models of other settings (a 224 and a 384 variant) get their own preprocessing of the same decoded
image, under a pixel key of their own (``release``, ``release-2``, ...): one pass, one decode, one resize per
distinct protocol, never one per model. :class:`~evaluate.validation.lightning_module.EvalModule` runs every candidate of
every model, each on its own preprocessing of a batch; where the job has several models their candidates are
named ``<name>/<row>`` (``cvt-13-224/converted``) for the pass, and the results are split back per model
afterwards under the rows' own names (:func:`member_results`).

**What is refused**: with several models, the options that concern one model and a model given twice (exit 2,
:func:`evaluate.plan.check_several_models`); before any model is loaded, models whose class counts or label
maps differ (the images carry one label each, so every model must speak the same classes).
``stock``/``with_stock``/``preprocessing both`` apply to every model.
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from cvt_port.provenance import weights_provenance
from cvt_port.variants import Variant

from .pixels.cache_inputs import run_inputs
from .pixels.cache_key import describe_transform, sha256_json
from .models.candidates import Candidates, build_candidates, tune_models
from .pixels.transforms import build_transforms
from .sources.inputs import Inputs, num_classes
from .sources.label_space import LabelSpace, resolve_label_space
from .models.folders import Candidate, LoadedFolder, inspect_folder, resolve_variant
from .plan import EvalPlan, ModelSpec, PlanError
from .verdict.gate_settings import check_data_gate, for_data


@dataclass
class Member:
    """One model of the job: its table name, its one-model spec, folder and variant (read off the original weights
    once loaded, when no config names it), the pixel key of each of its preprocessing modes, and (once loaded) its
    candidates, whose row names map to their names in the pass."""

    name: str
    spec: ModelSpec
    folder: LoadedFolder
    variant: Variant | None
    keys: dict[str, str] = field(default_factory=dict)  # mode ("release", "hf") -> pixel key of its group
    candidates: Candidates | None = None
    internal: dict[str, str] = field(default_factory=dict)  # row name ("converted") -> candidate name in the pass


@dataclass
class Sources:
    """The job's models (nothing loaded) and its images, checked against the models' one label set, and the classes
    the images are scored over (:mod:`evaluate.sources.label_space`)."""

    members: list[Member]
    inputs: Inputs
    stamps: object  # the cache's source stamps when the images come from its own list, else None
    classes: int
    label_space: LabelSpace | None = None


def table_names(models: list[str]) -> list[str]:
    """Each model's name in the table: its folder's (or Hub repo's) last part, or the whole of what was given
    where two models share that last part."""
    short = [Path(m.rstrip("/\\")).name or m for m in models]
    return [s if short.count(s) == 1 else m for s, m in zip(short, models)]


def sources(plan: EvalPlan, cache_dir: Path | None = None) -> Sources:
    """Every model's folder and variant, and the images: a bad folder, original .pth or data path, or labels the
    models do not have, are reported before any model is loaded. With ``cache_dir``: the cache's own image list
    when it was built with these data flags (no walk)."""
    entries = plan.models.entries
    check_data_gate(plan.data.gate)  # the data's own gate settings within their bounds, whatever the models
    members = []
    for name, entry in zip(table_names([e.model for e in entries]), entries):
        spec = dataclasses.replace(plan.models, model=entry.model, config=entry.config, reference=entry.reference,
                                   extra_models=())
        folder = inspect_folder(entry.model)
        members.append(Member(name, spec, folder, resolve_variant(entry.config, folder)))
        if entry.reference is None:  # the data's own gate (a suite's set) checked now, unless the .pth names the variant
            for_data(members[-1].variant, plan.data.gate)
        if entry.reference is not None and not Path(entry.reference).exists():
            raise PlanError("models.reference", "no such file", entry.reference)
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
    space = resolve_label_space(plan.data.label_space, inputs.data_classes, classes[0])
    return Sources(members, inputs, stamps, classes[0], space)


def hash_weights(members: list[Member]) -> list[Future]:
    """Each model's weights' sha256, read beside the loading and the pass (hashlib releases the GIL: a 1 GB file
    costs the pass nothing); ``.result()`` once the pass is over."""
    hashing = ThreadPoolExecutor(2, thread_name_prefix="cvt-port-sha256")
    weights = [hashing.submit(weights_provenance, m.folder.source, m.folder.is_local, m.folder.conversion_facts())
               for m in members]
    hashing.shutdown(wait=False)
    return weights


def load_models(members: list[Member], plan: EvalPlan) -> None:
    """Every model's candidates (its original .pth as the reference, the stock class, ...); a variant no config
    named is read off the original weights."""
    for m in members:
        m.candidates = build_candidates(m.spec, plan.modes, m.folder, m.variant)
        m.variant = for_data(m.candidates.variant, plan.data.gate)  # a suite's set may have its own gate


def pixels(members: list[Member], plan: EvalPlan) -> dict:
    """One transform per distinct preprocessing of the job, by pixel key; each member's keys are set."""
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
    return transforms


def check_input_sizes(members: list[Member], transforms: dict) -> None:
    """A model of another architecture (``AutoModelForImageClassification``: a ViT, a DeiT) may take only the input
    size it was trained at, where a CvT takes any: each such model is called once on one blank image of each
    preprocessing it reads, so that a size it refuses is one line and exit 2 before the first batch, not an
    internal error in the pass. CvT folders and the original are not probed (the demo pays nothing)."""
    import torch

    from cvt_port.errors import BadInput, first_line

    from .pixels.dataset import output_shape
    from .plan import ModelKind

    for m in members:
        for c in m.candidates.models:
            if c.kind is not ModelKind.AUTO:
                continue
            shape = output_shape(transforms[m.keys[c.preprocessing]])
            try:
                with torch.no_grad():
                    c.module(torch.zeros(1, *shape))
            except Exception as exc:
                said = m.folder.config.get("image_size")
                if c.preprocessing == "hf":
                    hint = "its own image processor (preprocessor_config.json) gives images the model refuses"
                elif said:
                    hint = f"its config.json says image_size {said}: give a --config whose img_size is {said}, or " \
                           "--preprocessing hf"
                else:
                    hint = "give a --config of the input size it takes, or --preprocessing hf"
                raise BadInput(f"{m.folder.source}: the model does not take the {shape[-2]}x{shape[-1]} images of the "
                               f"'{c.preprocessing}' preprocessing ({first_line(exc, typed=True)}); {hint}") from None


def pass_candidates(members: list[Member], plan: EvalPlan, mixed) -> tuple[list[Candidate], list[str]]:
    """Every model's candidates as the pass runs them (named, reading their group's pixels), and under bf16/fp16
    autocast (``mixed``) the names of those whose logits are computed in float32. The heads are wrapped before
    torch.compile (a compiled graph would not see the wrapper), then the attention and compile settings apply."""
    from .validation.lightning_module import module_key
    from .runtime.numerics import float32_head

    rows = [(i, m, c) for i, m in enumerate(members) for c in m.candidates.models]
    names = [c.name if len(members) == 1 else f"{m.name}/{c.name}" for _, m, c in rows]
    if len({module_key(n) for n in names}) < len(names):  # names that differ only in punctuation: numbered
        names = [f"{i + 1}:{n}" for (i, _, _), n in zip(rows, names)]
    every = []
    for (_, m, c), name in zip(rows, names):
        m.internal[c.name] = name
        every.append(dataclasses.replace(c, name=name, preprocessing=m.keys[c.preprocessing]))
    heads = [c.name for c in every if mixed is not None and c.kind != "reference" and float32_head(c.module)]
    for m in members:
        tune_models(m.candidates, plan.run.attention, plan.run.compile)
    for c, (_, m, original) in zip(every, rows):
        c.module = original.module  # torch.compile may have replaced it
    return every, heads


def reference_sample_of(plan: EvalPlan, src: Sources, weights: list[Future]):
    """With ``models.reference_sample``: the original's sample (:mod:`evaluate.verdict.reference_sample`), once
    the weights are proved to be its own (:mod:`evaluate.models.same_weights`; a PlanError otherwise); None
    without it, or when the sample would be every image."""
    if not plan.models.reference_sample:
        return None
    from .models.same_weights import prove_same_weights
    from .verdict.reference_sample import choose

    m = src.members[0]  # a reference needs a job of one model
    proof = prove_same_weights(m.folder, m.spec.reference, weights[0].result().get("sha256"))
    return choose(src.inputs.samples, m.variant, plan.data.seed, proof)


def reference_of(members: list[Member]) -> str | None:
    """The pass name of the original the converted models are compared with (at most one: the plan allows a
    reference with one model only)."""
    return next((m.internal[m.candidates.reference] for m in members if m.candidates.reference), None)


def member_results(results: dict, m: Member) -> dict:
    """The pass's results as a run of this model alone would have them: its rows only, under their own names and
    preprocessing modes."""
    mode_of = {key: mode for mode, key in m.keys.items()}
    models = {row: dataclasses.replace(results["models"][name], name=row,
                                       preprocessing=mode_of[results["models"][name].preprocessing])
              for row, name in m.internal.items()}
    rows = [(idx, label, {row: top[name] for row, name in m.internal.items() if name in top})
            for idx, label, top in results["rows"]]
    probs = {idx: {row: p[name] for row, name in m.internal.items() if name in p}
             for idx, p in results.get("top1_prob", {}).items()}
    return {**results, "models": models, "rows": rows, "top1_prob": probs}


def member_heads(heads: list[str], m: Member) -> list[str]:
    """The model's rows whose logits were computed in float32, by their row names (as a run of it alone records
    them)."""
    return [row for row, name in m.internal.items() if name in heads]
