"""The Lightning side: a data module that shards without repeating, and a module that runs every
candidate model on the very same batches and keeps torchmetrics for each.

Lightning's default DistributedSampler pads ranks by repeating images; an accuracy harness
must count every image exactly once, so we turn it off (``use_distributed_sampler=False``) and
shard with :class:`ShardSampler`. Ranks may then see different numbers of batches, so nothing
collective happens per step: torchmetrics synchronise their states once, at ``compute()``, and
per-image predictions are gathered once at the end of the epoch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import lightning as L
from lightning.pytorch.accelerators import CUDAAccelerator
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Sampler
from torchmetrics import MaxMetric, MeanMetric, SumMetric
from torchmetrics.classification import MulticlassAccuracy

from cvt_port.errors import BadInput

from .dataset import collate
from .models import Candidate
from .preprocess import Normalization


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...``: disjoint shards that together cover the data once."""

    def __init__(self, length: int, rank: int = 0, world_size: int = 1):
        self.indices = list(range(rank, length, world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class EvalDataModule(L.LightningDataModule):
    def __init__(self, dataset, batch_size: int, num_workers: int):
        super().__init__()
        self.dataset, self.batch_size, self.num_workers = dataset, batch_size, num_workers

    def val_dataloader(self) -> DataLoader:
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        on_gpu = trainer is not None and isinstance(trainer.accelerator, CUDAAccelerator)
        return DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            sampler=ShardSampler(len(self.dataset), rank, world),
            num_workers=self.num_workers,
            collate_fn=getattr(self.dataset, "collate", collate),
            pin_memory=on_gpu,
            persistent_workers=False,
            prefetch_factor=4 if self.num_workers > 0 else None,
        )


@dataclass
class ModelResult:
    name: str
    kind: str
    preprocessing: str
    count: int
    top1: float
    top5: float
    per_class: list[float]
    agreement: float | None = None  # with the reference model, top-1
    max_abs_logit_diff: float | None = None
    extra: dict = field(default_factory=dict)


def exact_percent(fraction: torch.Tensor, count: int) -> float:
    """torchmetrics accumulates in float32; the accuracy is a ratio of integers, so recover it exactly
    (float32 is precise to far better than one image in 2**20)."""
    return 100 * round(float(fraction) * count) / count if count else float("nan")


def _safe(name: str) -> str:
    return "m_" + "".join(c if c.isalnum() else "_" for c in name)


class EvalModule(L.LightningModule):
    """Runs each candidate on its preprocessing of the same batch; metrics per candidate."""

    def __init__(
        self,
        candidates: list[Candidate],
        normalizations: dict[str, Normalization],
        num_classes: int,
        reference: str | None = None,
        skip_bad_images: bool = False,
        pad_to: int | None = None,
    ):
        super().__init__()
        self.pad_to = pad_to
        self.candidates = candidates
        self.models = nn.ModuleDict({_safe(c.name): c.module for c in candidates})
        self.normalizations = normalizations
        self.num_classes = num_classes
        self.topk = min(5, num_classes)
        self.reference = reference
        self.skip_bad_images = skip_bad_images
        mk = lambda **kw: MulticlassAccuracy(num_classes=num_classes, **kw)  # noqa: E731
        self.top1 = nn.ModuleDict({_safe(c.name): mk(top_k=1, average="micro") for c in candidates})
        self.top5 = nn.ModuleDict({_safe(c.name): mk(top_k=self.topk, average="micro") for c in candidates})
        self.per_class = nn.ModuleDict({_safe(c.name): mk(top_k=1, average="none") for c in candidates})
        self.count = SumMetric()
        others = [c for c in candidates if c.name != reference] if reference else []
        self.agree = nn.ModuleDict({_safe(c.name): MeanMetric() for c in others})
        self.maxdiff = nn.ModuleDict({_safe(c.name): MaxMetric() for c in others})
        self._rows: list[tuple] = []
        self._bad_messages: list[str] = []
        self.results: dict | None = None

    # -- the pass ------------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._rows, self._bad_messages = [], []
        self._t0 = time.perf_counter()
        self._t_first, self._n_first = None, 0  # end of this rank's first batch (warm-up, compilation)

    def _forward(self, c: Candidate, x: torch.Tensor) -> torch.Tensor:
        """The reference is the ground truth: it always runs in float32, outside any autocast, so
        --precision bf16-mixed is judged against the original as released.

        With ``pad_to`` (--compile), a short batch (the last one, or one with skipped images) is
        padded with zero images to the full batch size and the padding's outputs dropped: one
        compiled graph serves the whole pass instead of a recompilation for the new shape. In eval
        mode every image's logits depend on that image alone (BatchNorm uses running statistics)."""
        n = x.shape[0]
        if self.pad_to and n < self.pad_to:
            x = torch.cat([x, x.new_zeros((self.pad_to - n, *x.shape[1:]))])
        model = self.models[_safe(c.name)]
        if c.kind == "reference" and torch.is_autocast_enabled(x.device.type):
            with torch.autocast(device_type=x.device.type, enabled=False):
                return model(x.float()).float()[:n]
        return model(x).float()[:n]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        ok = batch["ok"]
        if not bool(ok.all()):
            if not self.skip_bad_images:
                raise BadInput(f"{batch['errors'][0]}; pass --skip-bad-images to count and skip bad images")
            self._bad_messages.extend(batch["errors"])
        labels = batch["label"][ok]
        index = batch["index"][ok]
        if labels.numel() == 0:
            return
        self.count.update(torch.tensor(float(labels.numel()), device=self.device))
        logits = {}
        for c in self.candidates:
            key = _safe(c.name)
            x = self.normalizations[c.preprocessing](batch["pixels"][c.preprocessing][ok])
            out = self._forward(c, x)
            logits[c.name] = out
            self.top1[key].update(out, labels)
            self.top5[key].update(out, labels)
            self.per_class[key].update(out, labels)
        if self.reference:
            ref = logits[self.reference]
            for c in self.candidates:
                if c.name != self.reference:
                    key = _safe(c.name)
                    self.agree[key].update((logits[c.name].argmax(-1) == ref.argmax(-1)).float())
                    self.maxdiff[key].update((logits[c.name] - ref).abs().max())
        top = {name: out.topk(self.topk, dim=-1).indices.cpu() for name, out in logits.items()}
        for i in range(labels.numel()):
            self._rows.append((int(index[i]), int(labels[i]), {n: top[n][i].tolist() for n in top}))
        if self._t_first is None:
            self._t_first, self._n_first = time.perf_counter(), labels.numel()

    def on_validation_epoch_end(self) -> None:
        now = time.perf_counter()
        elapsed = now - self._t0
        # steady state: after each rank's first batch (kernel selection, torch.compile, worker warm-up)
        firsts = self._gather([(self._n_first, now - self._t_first if self._t_first else 0.0)])
        rows, bad = self._gather(self._rows), self._gather(self._bad_messages)
        rows.sort(key=lambda r: r[0])
        results = {}
        count = int(self.count.compute())
        for c in self.candidates:
            key = _safe(c.name)
            r = ModelResult(
                name=c.name,
                kind=c.kind,
                preprocessing=c.preprocessing,
                count=count,
                top1=exact_percent(self.top1[key].compute(), count),
                top5=exact_percent(self.top5[key].compute(), count),
                per_class=[100 * float(v) for v in self.per_class[key].compute()],
            )
            if key in self.agree:
                r.agreement = exact_percent(self.agree[key].compute(), count) / 100  # exact: the gate tests >= 99.9%
                r.max_abs_logit_diff = float(self.maxdiff[key].compute())
            results[c.name] = r
        self.results = {
            "models": results,
            "rows": rows,
            "bad_images": sorted(bad),
            "elapsed_s": max(self._gather([elapsed])),
            "first_batch_images": sum(n for n, _ in firsts),
            "steady_s": max(t for _, t in firsts),
        }

    # -- helpers -------------------------------------------------------------------------------
    def _gather(self, items: list) -> list:
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return list(items)
        out = [None] * dist.get_world_size()
        dist.all_gather_object(out, list(items))
        return [x for part in out for x in part]
