"""The pass's data: a sampler that shards without repeating and the data module that serves it.

Lightning's default DistributedSampler pads ranks by repeating images; an accuracy harness must count every
image exactly once, so it is turned off (``use_distributed_sampler=False``, :mod:`evaluate.validation.trainer`)
and :class:`ShardSampler` shards instead. A rank with no images (fewer images than processes) reads one
placeholder batch it ignores, so its epoch hooks, and so its collectives, still run. What ends a rank's pass
outside a step (an exception in the data loader; a signal, which Lightning turns into ``SIGTERMException`` or
``KeyboardInterrupt``, see :mod:`evaluate.runtime.interrupts`) reaches the fault exchange through
:meth:`EvalDataModule.on_exception`, so the other ranks end with the same status instead of waiting.
"""

from __future__ import annotations

import threading

import lightning as L
from lightning.pytorch.accelerators import CUDAAccelerator
import torch
from torch.utils.data import DataLoader, Sampler

from ..pixels.dataset import collate
from .faults import Fault
from .lightning_module import EvalModule


class ShardSampler(Sampler[int]):
    """One contiguous block of indices per rank: disjoint shards that together cover the data once,
    balanced to within one image (the first ``length % world_size`` ranks hold one more). Contiguous
    blocks make every batch a run of consecutive indices, which a cache reads as one slice per mode
    (:mod:`evaluate.pixels.cache`) instead of a gather of scattered rows.

    A rank whose shard is empty yields index 0 once as a *placeholder* (``placeholder`` is True):
    Lightning skips the whole evaluation loop, epoch hooks included, for a loader with no batch,
    and that rank would then miss the collectives the others wait in. ``stop`` (an Event) ends the
    iteration early once the rank has a fault: the rest of its data need not be read."""

    def __init__(self, length: int, rank: int = 0, world_size: int = 1, stop: threading.Event | None = None):
        size, extra = divmod(length, world_size)
        start = rank * size + min(rank, extra)
        self.indices = list(range(start, start + size + (rank < extra)))
        self.placeholder = not self.indices and length > 0
        if self.placeholder:
            self.indices = [0]
        self.stop = stop

    def __iter__(self):
        for i in self.indices:
            if self.stop is not None and self.stop.is_set():
                return
            yield i

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
        module = trainer.lightning_module if trainer is not None else None
        sampler = ShardSampler(len(self.dataset), rank, world, stop=getattr(module, "stop_reading", None))
        base = getattr(self.dataset, "collate", collate)
        return DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=_PlaceholderCollate(base) if sampler.placeholder else base,
            pin_memory=on_gpu,
            persistent_workers=False,
            prefetch_factor=4 if self.num_workers > 0 else None,
        )

    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        """Only what the models read goes to the device: the pixels and one copy of the labels
        (``label_on_device``). ``index``, ``label`` and ``ok`` stay on the host, where the step reads
        them without waiting for the device (:class:`EvalModule`). A data-module hook: Lightning warns
        when the module overrides it while a data module is in use."""
        if not isinstance(batch, dict) or "pixels" not in batch:
            return super().transfer_batch_to_device(batch, device, dataloader_idx)
        moved = super().transfer_batch_to_device({"pixels": batch["pixels"], "label": batch["label"]}, device,
                                                 dataloader_idx)
        return {**batch, "pixels": moved["pixels"], "label_on_device": moved["label"]}

    def on_exception(self, exception: BaseException) -> None:
        """An exception outside a validation step (e.g. in the data loader) on this rank: take part in
        the fault exchange the other ranks will reach at the end of their pass, so they end with the
        same status instead of waiting for this rank or dying in a collective."""
        module = self.trainer.lightning_module if self.trainer is not None else None
        if isinstance(module, EvalModule) and not module.decided:
            module.record(Fault.from_exception(exception))
            try:
                module.decide()
            except BaseException:  # noqa: BLE001 - this rank raises its own exception right after
                pass


class _PlaceholderCollate:
    """Collate of an empty shard's placeholder batch: marked so the step ignores it (picklable)."""

    def __init__(self, base):
        self.base = base

    def __call__(self, items):
        batch = self.base(items)
        batch["placeholder"] = True
        return batch
