"""One top-1 everywhere: figures, agreement, predictions, ReaL, McNemar and per-class all come from
one ranking per image, and equal logits rank the lower class index first."""

from __future__ import annotations

import lightning as L
import torch
from torch import nn

from evaluate.pixels.dataset import collate
from evaluate.validation.data_module import EvalDataModule
from evaluate.validation.lightning_module import EvalModule
from evaluate.validation.metrics import ranked
from evaluate.models.folders import Candidate
from evaluate.pixels.preprocess import Normalization
from evaluate.reports.report import compare, real_top1

NUM_CLASSES = 10


class FixedLogits(nn.Module):
    """The same logits for every image."""

    def __init__(self, values: dict[int, float]):
        super().__init__()
        logits = torch.zeros(NUM_CLASSES)
        for k, v in values.items():
            logits[k] = v
        self.register_buffer("logits", logits)

    def forward(self, x):
        return self.logits.expand(x.shape[0], -1).clone()


class Items(torch.utils.data.Dataset):
    def __init__(self, labels):
        self.labels = labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        pixels = {"release": torch.zeros(3, 4, 4, dtype=torch.uint8)}
        return {"index": i, "label": self.labels[i], "ok": True, "pixels": pixels}


def test_ranked_breaks_ties_by_the_lowest_class_index():
    x = torch.zeros(3, 1000)
    x[0, [7, 3]] = 1.0
    x[1, [999, 500, 2]] = -1.0  # the rest tie at 0: 0, 1, 3, 4, 5
    x[2] = torch.tensor([0.5, 0.25]).repeat(500).to(torch.bfloat16).float()
    assert ranked(x, 5).tolist() == [[3, 7, 0, 1, 2], [0, 1, 3, 4, 5], [0, 2, 4, 6, 8]]


def test_tied_logits_give_one_top1_in_every_figure():
    """The converted model ties classes 5 and 2 exactly (2 wins); the original ranks 2 first outright.
    Labels: half 2, half 5. So top-1 50%, per class 100%/0%, agreement 100%, no image differs."""
    labels = [2, 5] * 6 + [2]
    converted = Candidate("converted", "exact", FixedLogits({5: 3.0, 2: 3.0, 9: 1.0}), "release")
    original = Candidate("original", "reference", FixedLogits({2: 3.0, 5: 2.999, 9: 1.0}), "release")
    module = EvalModule([converted, original], {"release": Normalization((0.0,) * 3, (1.0,) * 3)}, NUM_CLASSES,
                        reference="original")
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False)
    trainer.validate(module, datamodule=EvalDataModule(Items(labels), batch_size=4, num_workers=0), verbose=False)
    res = module.results
    conv = res["models"]["converted"]
    rows = res["rows"]
    assert [top["converted"] for _, _, top in rows] == [[2, 5, 9, 0, 1]] * len(labels)
    right = sum(top["converted"][0] == label for _, label, top in rows)
    assert right == labels.count(2) == 7
    assert conv.top1 == 100 * right / len(labels)
    assert conv.top5 == 100.0
    assert conv.per_class[2] == 100.0 and conv.per_class[5] == 0.0
    assert conv.agreement == 1.0
    ids = [f"ILSVRC2012_val_{n:08d}.JPEG" for n in range(1, len(labels) + 1)]
    cmp = compare(rows, ids, "converted", "original")
    assert cmp["top1_differs"] == [] and cmp["mcnemar_p"] == 1.0
    assert real_top1(rows, ids, "converted") == real_top1(rows, ids, "original")
