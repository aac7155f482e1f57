"""Lightning's progress bar with images per second and the time left, for every data source.

Lightning's bars count batches and show batches per second; a long run on a cluster wants images per
second (batches differ in size: the last one, and each process's share) and the expected time left in
images. :class:`Throughput` counts the images of this process's batches from the second batch on (the
first carries the DataLoader's start-up); the time left is (images still to come) / rate when the number
is known (the sampler's length: every layout here, streamed ones too), else only the rate is shown
(an IterableDataset of unknown length). :func:`progress_bar` gives Lightning's own bar (Rich when
installed, else tqdm) with that text in the description (Rich) or postfix (tqdm).
"""

from __future__ import annotations

import time

from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar
from lightning.pytorch.utilities.imports import _RICH_AVAILABLE


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Throughput:
    """Images per second and time left of one process's validation pass (``clock``: a time source)."""

    def __init__(self, clock=time.perf_counter):
        self.clock = clock
        self.reset(None)

    def reset(self, total: int | None) -> None:
        self.total, self.done, self.t0, self.timed = total, 0, None, 0

    def add(self, images: int) -> None:
        self.done += images
        if self.t0 is None:
            self.t0 = self.clock()  # the rate counts the images after the first batch
        else:
            self.timed += images

    def text(self) -> str:
        elapsed = self.clock() - self.t0 if self.t0 is not None else 0.0
        if not self.timed or elapsed <= 0:
            return f"{self.done}{f'/{self.total}' if self.total else ''} img"
        rate = self.timed / elapsed
        left = f", {_clock(max(self.total - self.done, 0) / rate)} left" if self.total else ", time left unknown"
        return f"{self.done}{f'/{self.total}' if self.total else ''} img, {rate:.1f} img/s{left}"


def images_in(batch) -> int:
    """Images of a batch (a placeholder batch of an empty shard counts none)."""
    if isinstance(batch, dict):
        if batch.get("placeholder"):
            return 0
        labels = batch.get("label")
        return len(labels) if labels is not None else 0
    return len(batch[0]) if isinstance(batch, (list, tuple)) and batch else 0


def images_total(trainer) -> int | None:
    """Images this process will read: its sampler's (or dataset's) length; None when unknown."""
    loaders = trainer.val_dataloaders
    loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
    if loader is None:
        return None
    sampler = getattr(loader, "sampler", None)
    if getattr(sampler, "placeholder", False):
        return 0
    for sized in (sampler, getattr(loader, "dataset", None)):
        try:
            return len(sized)
        except TypeError:
            continue
    return None


class _ImagesMixin:
    """What both bars share: a :class:`Throughput` reset when the pass starts and fed every batch."""

    def __init__(self, clock=time.perf_counter, **kwargs):
        super().__init__(**kwargs)
        self.throughput = Throughput(clock)

    def on_validation_start(self, trainer, pl_module) -> None:
        super().on_validation_start(trainer, pl_module)
        self._reset_images(trainer)

    def _reset_images(self, trainer) -> None:
        self.throughput.reset(images_total(trainer))

    def _count_images(self, batch) -> str:
        self.throughput.add(images_in(batch))
        return self.throughput.text()


class RichImagesBar(_ImagesMixin, RichProgressBar):
    """Lightning's Rich bar; the validation description says ``Validation 96/500 img, 31.2 img/s, 0:00:13 left``."""

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        text = self._count_images(batch)
        super().on_validation_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)
        if self.is_enabled and self.progress is not None and self.val_progress_bar_id is not None \
                and not trainer.sanity_checking:
            self.progress.update(self.val_progress_bar_id, description=f"{self.validation_description} {text}")


class TQDMImagesBar(_ImagesMixin, TQDMProgressBar):
    """Lightning's tqdm bar with ``96/500 img, 31.2 img/s, 0:00:13 left`` as the validation bar's postfix."""

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        text = self._count_images(batch)
        super().on_validation_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)
        if self.is_enabled and not trainer.sanity_checking and self._val_progress_bar is not None:
            self.val_progress_bar.set_postfix_str(text, refresh=False)


def progress_bar():
    """The bar Lightning would choose (Rich when installed, else tqdm), counting images."""
    return RichImagesBar() if _RICH_AVAILABLE else TQDMImagesBar()
