"""The LightningModule of the pass: every candidate model on the very same batches, torchmetrics for each.

The figures are counted as in :mod:`evaluate.validation.metrics` (one ranking per image); the data comes from
:mod:`evaluate.validation.data_module`; faults in a step are recorded and decided together at the end of the
pass (:mod:`evaluate.validation.faults`), first thing in :meth:`EvalModule.on_validation_epoch_end`. Per-image
predictions are gathered once, at the end of the epoch.
"""

from __future__ import annotations

import threading
import time
import warnings

import lightning as L
import torch
import torch.distributed as dist
from torch import nn
from torchmetrics import MaxMetric

from cvt_port.errors import BadInput

from ..models.folders import Candidate
from ..pixels.preprocess import Normalization
from ..runtime import peers
from ..runtime.numerics import float32_mode
from .faults import Fault, decide_faults, fault_exception
from .memory import chunked, out_of_memory
from .reference_queue import SampleQueue
from .metrics import ClassCounts, ModelResult, class_ratios, metric_name, percent, ranked, sum_metric
from .metrics import top1_probability


def module_key(name: str) -> str:
    """A candidate's key in the module's ModuleDicts (letters, digits and underscores only)."""
    return "m_" + "".join(c if c.isalnum() else "_" for c in name)


class EvalModule(L.LightningModule):
    """Runs each candidate on its preprocessing of the same batch; metrics per candidate.

    Counts are kept as torchmetrics ``SumMetric`` states (synced across ranks at ``compute()``):
    top-1/top-5 hits and agreements from :func:`ranked`, and per-class hits and images as vectors of
    ``num_classes`` counts. The ratios are then exact.

    **Few host-device synchronisations per step** (one with any number of models, on the fault-free
    path): the batch's ``index``, ``label`` and ``ok`` stay on the host (:meth:`EvalDataModule.transfer_batch_to_device`
    sends the pixels and one copy of the labels), a batch without bad images is not masked, every
    count is a device tensor added to a metric state, and the top-k of all models is copied to the host
    once per step. Hence no ``nan_strategy`` check in the aggregation metrics (``"disable"``: the check
    reads a device flag per update; a NaN logit difference then shows as NaN instead of being dropped)
    and no ``MulticlassAccuracy`` (its update validates its input and calls ``torch.bincount``, which
    reads the largest class on the host; here per-class counts are an ``index_add_``)."""

    def __init__(
        self,
        candidates: list[Candidate],
        normalizations: dict[str, Normalization],
        num_classes: int,
        reference: str | None = None,
        skip_bad_images: bool = False,
        pad_to: int | None = None,
        hparams: dict | None = None,
        reference_chunk: int | None = None,
        label_space: tuple[int, ...] | None = None,
        reference_on: frozenset[int] | None = None,
        reference_batch: int = 32,
        warm_shapes: dict[str, tuple[int, ...]] | None = None,
        on_compiled=None,
    ):
        super().__init__()
        if hparams:  # the run's settings, which Lightning hands to its loggers before the pass
            self.save_hyperparameters(hparams)
        self.pad_to = pad_to
        # run.compile: every model compiled before the pass on zeros of these shapes (uint8 pixels per preprocessing),
        # and on_compiled(seconds) told the cost (evaluate.run prints it)
        self.warm_shapes, self.on_compiled, self.compile_s = warm_shapes, on_compiled, None
        self.reference_chunk = reference_chunk  # the reference runs this many images at a time (evaluate.validation.memory)
        self.candidates = candidates
        self.models = nn.ModuleDict({module_key(c.name): c.module for c in candidates})
        self.normalizations = normalizations
        self.num_classes = num_classes
        # the label space (evaluate.sources.label_space): every row ranks only these classes; None: all of them
        keep = None
        if label_space is not None:
            keep = torch.zeros(num_classes, dtype=torch.bool)
            keep[list(label_space)] = True
        self.register_buffer("keep", keep, persistent=False)  # moves to the device with the module
        self.topk = min(5, num_classes if label_space is None else len(label_space))
        self.reference = reference
        self.skip_bad_images = skip_bad_images
        keys = [module_key(c.name) for c in candidates]
        self.hits1 = nn.ModuleDict({k: sum_metric() for k in keys})
        self.hits5 = nn.ModuleDict({k: sum_metric() for k in keys})
        self.class_hits = nn.ModuleDict({k: ClassCounts(num_classes) for k in keys})  # top-1 right, per class
        self.class_images = ClassCounts(num_classes)  # images evaluated, per class
        self.count = sum_metric()
        others = [c for c in candidates if c.name != reference] if reference else []
        self.agree = nn.ModuleDict({module_key(c.name): sum_metric() for c in others})
        self.maxdiff = nn.ModuleDict({module_key(c.name): MaxMetric(nan_strategy="disable") for c in others})
        # the original on a sample only (evaluate.verdict.reference_sample): the images (positions) it runs on, their
        # count and classes, and each other model's top-1 hits there (the paired checks compare on the same images)
        self.sample = (SampleQueue(self, module_key(reference), reference_on, pad_to or reference_batch)
                       if reference and reference_on is not None else None)
        if self.sample is not None:
            self.sample_count, self.sample_images = sum_metric(), ClassCounts(num_classes)
            self.sample_hits1 = nn.ModuleDict({module_key(c.name): sum_metric() for c in others})
        self.stop_reading = threading.Event()
        self._rows: list[tuple] = []
        self._bad_messages: list[str] = []
        self._content: list[tuple[int, str]] = []  # (index, sha256 of the image's bytes)
        self._top1_prob: list[tuple[int, dict]] = []  # (index, {candidate: softmax probability of its top-1})
        self._faults: list[Fault] = []
        self._error: BaseException | None = None
        self.decided = False
        self.results: dict | None = None

    # -- faults --------------------------------------------------------------------------------
    def record(self, fault: Fault) -> None:
        """Note a fault of this rank and stop reading data; the decision comes at the end of the pass."""
        self._faults.append(Fault(fault.kind, fault.message, self.global_rank))
        self.stop_reading.set()

    def decide(self) -> None:
        """The collective decision, first thing at the end of every rank's pass: all ranks exchange
        their faults, and if any rank has one, every rank raises the same exception."""
        self.decided = True
        fault = decide_faults(self._gather(self._faults))
        if fault is not None:
            peers.stop()  # every rank leaves the pass now: one that exits first has not died
            own = self._error if fault.rank == self.global_rank else None
            raise fault_exception(fault) from own  # this rank's own traceback stays chained

    # -- the pass ------------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._rows, self._bad_messages, self._faults, self._error = [], [], [], None
        self._content, self._top1_prob = [], []
        self.decided = False
        self.stop_reading.clear()
        peers.start()  # a process of the launch that dies during the pass is noticed in seconds (evaluate.runtime.peers)
        self._t0 = time.perf_counter()
        self._t_first, self._n_first = None, 0  # end of this rank's first batch (warm-up, compilation)

    def on_validation_start(self) -> None:
        """With ``run.compile``: each model's graph made now, before the first image, on a batch of zeros of the
        pass's shape (under the pass's own grad mode and precision context, so the first batch finds it), so that
        its cost is known and shown before the pass and the pass's rate is the compiled one."""
        if not (self.pad_to and self.warm_shapes):
            return
        t0 = time.perf_counter()
        with self.trainer.precision_plugin.val_step_context():
            for c in self.candidates:
                x = torch.zeros((self.pad_to, *self.warm_shapes[c.preprocessing]), dtype=torch.uint8,
                                device=self.device)
                self.forward_candidate(c, self.normalizations[c.preprocessing](x))
        self.compile_s = time.perf_counter() - t0
        if self.on_compiled is not None:
            self.on_compiled(self.compile_s)

    def forward_candidate(self, c: Candidate, x: torch.Tensor) -> torch.Tensor:
        """The reference is the ground truth: it always runs in IEEE float32 (no TF32), outside any
        autocast, so precision bf16-mixed and tf32 are judged against the original as released.

        With ``pad_to`` (``run.compile``), a compiled model's short batch (the last one, or one with skipped images) is
        padded with zero images to the full batch size and the padding's outputs dropped: one
        compiled graph serves the whole pass instead of a recompilation for the new shape. In eval
        mode every image's logits depend on that image alone (BatchNorm uses running statistics)."""
        n = x.shape[0]
        if self.pad_to and n < self.pad_to:  # every model, the original included, is compiled alike
            x = torch.cat([x, x.new_zeros((self.pad_to - n, *x.shape[1:]))])
        model = self.models[module_key(c.name)]
        if c.kind == "reference":  # IEEE float32 also under --tf32 (evaluate.runtime.numerics)
            with float32_mode(False), torch.autocast(device_type=x.device.type, enabled=False):
                return chunked(model, x.float(), self.reference_chunk).float()[:n]
        return model(x).float()[:n]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        if self._faults or batch.get("placeholder"):
            return
        try:
            self._step(batch)
        except Exception as exc:  # recorded, decided with the other ranks at the end of the pass
            self.record(Fault.from_exception(out_of_memory(exc, len(batch["label"]), self.device)))  # OOM: bad input
            self._error = exc

    def _step(self, batch: dict) -> None:
        ok, labels, index = batch["ok"], batch["label"], batch["index"]  # on the host
        pixels, target = batch["pixels"], batch.get("label_on_device", labels)
        # each image's content hash (the bytes it was decoded from), for predictions.csv and --baseline
        self._content.extend((i, h) for i, h, good in zip(index.tolist(), batch.get("sha256") or (), ok.tolist())
                             if good and h)
        if not bool(ok.all()):
            if not self.skip_bad_images:
                raise BadInput(f"{batch['errors'][0]}; use data.skip_bad_images to count and skip bad images")
            self._bad_messages.extend(batch["errors"])
            keep = ok.nonzero().squeeze(1)  # host indices; only a batch with bad images is masked
            labels, index = labels[keep], index[keep]
            if labels.numel() == 0:
                return
            keep = keep.to(target.device, non_blocking=True)
            target = target.index_select(0, keep)
            pixels = {mode: p.index_select(0, keep) for mode, p in pixels.items()}
        n = labels.numel()
        ones = torch.ones(n, device=target.device)
        self.count.update(ones)
        self.class_images.update(target, ones)
        sampled = self.sample is not None  # the original on its sample only: queued, run in full batches
        logits, top = {}, {}
        for c in self.candidates:
            key = module_key(c.name)
            if sampled and c.name == self.reference:
                continue
            x = self.normalizations[c.preprocessing](pixels[c.preprocessing])
            logits[c.name] = out = self.forward_candidate(c, x)
            top[c.name] = pred = ranked(out, self.topk, self.keep)
            right = (pred[:, 0] == target).float()
            self.hits1[key].update(right)
            self.hits5[key].update((pred == target[:, None]).any(dim=1).float())
            self.class_hits[key].update(target, right)
        if self.reference in top:
            self.paired(logits, top, target)
        names = list(top)
        # each row's top-k and the softmax probability of its top-1 (report.html's scatter) in the one copy to the
        # host per step: class indices are exact in float32 (below 2**24)
        host = torch.stack([torch.cat([top[name].float(), top1_probability(logits[name], top[name])], dim=1)
                            for name in names]).cpu().tolist()
        slots = []
        for i, (idx, label) in enumerate(zip(index.tolist(), labels.tolist())):
            slots.append(({name: [int(c) for c in host[m][i][:-1]] for m, name in enumerate(names)},
                          {name: host[m][i][-1] for m, name in enumerate(names)}))
            self._rows.append((idx, label, slots[-1][0]))
            self._top1_prob.append((idx, slots[-1][1]))
        if sampled:
            self.sample.add(index, target, pixels, logits, top, slots)
        if self._t_first is None:
            self._t_first, self._n_first = time.perf_counter(), n

    def paired(self, logits: dict, top: dict, target: torch.Tensor) -> None:
        """Agreement and max |logit diff| of each model with the original (``reference``'s rows: the same images)."""
        ref = self.reference
        for c in self.candidates:
            if c.name != ref:
                key = module_key(c.name)
                self.agree[key].update((top[c.name][:, 0] == top[ref][:, 0]).float())
                # over every output of the models, masked or not: a parity figure of the conversion
                self.maxdiff[key].update((logits[c.name] - logits[ref]).abs().max())
                if self.sample is not None:  # the converted model's top-1 on the same images, for reference_top1
                    self.sample_hits1[key].update((top[c.name][:, 0] == target).float())

    def on_validation_epoch_end(self) -> None:
        if self.sample is not None and not self._faults:  # the original's last, short batch of its sample
            try:
                self.sample.drain(everything=True)
            except Exception as exc:  # decided with the other ranks, as a step's
                self.record(Fault.from_exception(out_of_memory(exc, self.sample.pending, self.device)))
                self._error = exc
        now = time.perf_counter()
        elapsed = now - self._t0
        self.decide()  # every rank gets here (no rank raised in a step): faults first, then the figures
        # steady state: after each rank's first batch (kernel selection, torch.compile, worker warm-up)
        firsts = self._gather([(self._n_first, now - self._t_first if self._t_first else 0.0)])
        rows, bad, content = self._gather(self._rows), self._gather(self._bad_messages), self._gather(self._content)
        top1_prob = self._gather(self._top1_prob)
        rows.sort(key=lambda r: r[0])
        peers.stop()  # the last collectives of the pass are behind; the metrics' syncs come next
        with warnings.catch_warnings():  # a rank without images computes too: it takes part in the sync
            warnings.filterwarnings("ignore", message=r".*was called before the ``update`` method.*")
            results, count = self._compute()
        if count == 0:  # the same on every rank: the count is synced
            first = sorted(bad)[0] if bad else "no image was evaluated"
            raise BadInput(f"none of the {len(bad)} images could be read ({first}); nothing to evaluate")
        self.results = {
            "models": results,
            "rows": rows,
            "bad_images": sorted(bad),
            "content": dict(content),  # index -> sha256 of the image's bytes (images whose bytes were read)
            "top1_prob": dict(top1_prob),  # index -> {candidate: softmax probability of its top-1 class}
            "elapsed_s": max(self._gather([elapsed])),
            "first_batch_images": sum(n for n, _ in firsts),
            "steady_s": max(t for _, t in firsts),
        }
        self._log_figures(results, count)

    def _log_figures(self, results: dict, count: int) -> None:
        """The final figures, to Lightning's loggers and ``trainer.validate``'s return value: per model
        ``<name>/top1``, ``top5``, ``agreement_with_original``, ``max_abs_logit_diff``; and ``images``.
        Logged once, at the end of the pass, from every rank with the same (already synced) values and
        ``sync_dist=False``: no collective, however many batches each rank saw (Lightning's advice to sync
        is silenced in :func:`evaluate.validation.trainer.run_validation`). float64 tensors, so the
        values are report.json's exactly (Lightning would make a float a float32)."""
        def value(v: float) -> torch.Tensor:
            return torch.tensor(v, dtype=torch.float32 if self.device.type == "mps" else torch.float64,
                                device=self.device)

        figures = {"images": value(count)}
        for r in results.values():
            for name, v in (("top1", r.top1), ("top5", r.top5), ("agreement_with_original", r.agreement),
                            ("max_abs_logit_diff", r.max_abs_logit_diff)):
                if v is not None:
                    figures[f"{metric_name(r.name)}/{name}"] = value(v)
        self.log_dict(figures, sync_dist=False, on_step=False, on_epoch=True)

    def _compute(self) -> tuple[dict, int]:
        """Sync and compute every metric, on every rank (each compute() is a collective)."""
        count = int(round(float(self.count.compute())))
        results = {}
        if count == 0:
            return results, 0
        images = self.class_images.compute()
        sampled = self.sample is not None
        paired = int(round(float(self.sample_count.compute()))) if sampled else count  # images the original ran on
        for c in self.candidates:
            key = module_key(c.name)
            n, seen = (paired, self.sample_images.compute()) if sampled and c.name == self.reference else (count, images)
            r = ModelResult(
                name=c.name,
                kind=c.kind,
                preprocessing=c.preprocessing,
                count=n,
                top1=percent(self.hits1[key].compute(), n) if n else 0.0,
                top5=percent(self.hits5[key].compute(), n) if n else 0.0,
                per_class=[100 * float(v) for v in class_ratios(self.class_hits[key].compute(), seen)],
            )
            if key in self.agree and paired:
                r.agreement = percent(self.agree[key].compute(), paired) / 100  # exact: the gate tests >= 99.9%
                r.max_abs_logit_diff = float(self.maxdiff[key].compute())
                if sampled:
                    r.extra["sample_top1"] = percent(self.sample_hits1[key].compute(), paired)
            results[c.name] = r
        return results, count

    # -- helpers -------------------------------------------------------------------------------
    def _gather(self, items: list) -> list:
        if not _distributed() or dist.get_world_size() == 1:
            return list(items)
        out = [None] * dist.get_world_size()
        try:
            dist.all_gather_object(out, list(items))
        except RuntimeError as exc:  # gloo/NCCL: a peer died or did not answer within the group's timeout
            raise peers.collective_failed(exc) from None
        return [x for part in out for x in part]


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()
