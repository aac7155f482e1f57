"""Throughput: a validation step waits for the device at most twice, whatever the number of models, and the
figures it keeps are those of a plain loop over the same batches.

There is no GPU here, so the test simulates one. What the DataLoader hands over is on the host (marked
:class:`Host`); whatever the module sends through Lightning's ``transfer_batch_to_device``, or makes with
a ``device=`` argument, is on the device (unmarked), and so is anything computed from a device tensor.
Every operation that makes the host wait for a device value is counted when it reads a device tensor:
``item``, ``tolist``, ``cpu``/``to('cpu')``/``numpy``, ``bool``/``int``/``float``/``index`` (Python
control flow on a tensor), ``nonzero``, boolean-mask indexing, ``masked_select``, ``unique``, ``bincount``,
``equal``/``allclose``, printing, and ``torch.cuda.synchronize``. A step of the code before this change
did about 40 such reads with 2 models and batches of 8 (an ``int()`` per image, masking, NaN checks...).
"""

from __future__ import annotations

from collections import Counter

import lightning as L
import pytest
import torch
from lightning.pytorch.core.hooks import DataHooks
from torch import nn
from torch.overrides import TorchFunctionMode

from evaluate.pixels.dataset import collate
from evaluate.validation.data_module import EvalDataModule
from evaluate.validation.lightning_module import EvalModule
from evaluate.validation.metrics import ranked
from evaluate.models.folders import Candidate
from evaluate.pixels.preprocess import Normalization

NUM_CLASSES = 10
T = torch.Tensor


class Host(torch.Tensor):
    """A tensor in host memory (the subclass carries over to whatever is computed from host tensors only)."""


_READS = {T.item, T.tolist, T.cpu, T.numpy, T.__bool__, T.__int__, T.__float__, T.__index__, T.__complex__,
          T.nonzero, torch.nonzero, T.argwhere, torch.argwhere, T.masked_select, torch.masked_select, T.unique,
          torch.unique, T.unique_consecutive, torch.unique_consecutive, T.bincount, torch.bincount, T.equal,
          torch.equal, T.allclose, torch.allclose, T.__repr__, T.__str__, T.__format__, T.is_nonzero,
          torch.is_nonzero}


def _tensors(args, kwargs):
    out = []
    for a in [*args, *kwargs.values()]:
        if isinstance(a, torch.Tensor):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            out.extend(x for x in a if isinstance(x, torch.Tensor))
    return out


class SyncCounter(TorchFunctionMode):
    """Counts the host's reads of device values (see the module docstring) by the function that made them."""

    def __init__(self):
        super().__init__()
        self.reads: Counter = Counter()
        self.device_moves = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = _tensors(args, kwargs)
        source_on_device = bool(args) and isinstance(args[0], torch.Tensor) and not isinstance(args[0], Host)
        to_host = func is T.cpu or (func is T.to and _target(args, kwargs) == "cpu")
        if source_on_device and (func in _READS or to_host):
            self.reads[getattr(func, "__name__", str(func))] += 1
        elif func in (T.__getitem__, T.__setitem__) and any(
                isinstance(i, torch.Tensor) and not isinstance(i, Host) and i.dtype == torch.bool
                for i in (args[1] if isinstance(args[1], tuple) else (args[1],))):
            self.reads["boolean mask"] += 1
        ret = func(*args, **kwargs)
        if not isinstance(ret, torch.Tensor):
            return ret
        if func in (T.to, T.cuda, T.cpu):
            if source_on_device:  # to the host (a read, counted above), or to another device, or a dtype
                return ret.as_subclass(Host if to_host else torch.Tensor)
            moved = func is T.cuda or (func is T.to and _target(args, kwargs) is not None)
            self.device_moves += moved
            return ret.as_subclass(torch.Tensor if moved else Host)  # host -> device (no wait), or still host
        # made from device tensors, or made with device=: on the device; made from host tensors only: on the host
        made_on_device = any(not isinstance(t, Host) for t in tensors) or (
            not tensors and kwargs.get("device") is not None)
        return ret.as_subclass(torch.Tensor if made_on_device else Host)


def _target(args, kwargs) -> str | None:
    """The device type a ``to`` names (a host tensor argument names the host), None for a dtype only."""
    for a in [*args[1:], kwargs.get("device")]:
        if isinstance(a, (str, torch.device)):
            return torch.device(a).type
        if isinstance(a, torch.Tensor):
            return "cpu" if isinstance(a, Host) else "device"
    return None


def _host(x):
    if isinstance(x, torch.Tensor):
        return x.as_subclass(Host)
    if isinstance(x, dict):
        return {k: _host(v) for k, v in x.items()}
    return x


def _device(x):
    if isinstance(x, torch.Tensor):
        return x.as_subclass(torch.Tensor)
    if isinstance(x, dict):
        return {k: _device(v) for k, v in x.items()}
    return x


class Photos(torch.utils.data.Dataset):
    """Random images of random labels; the DataLoader's batches are host tensors."""

    def __init__(self, n: int, bad=()):
        g = torch.Generator().manual_seed(1)
        self.pixels = torch.randint(0, 256, (n, 3, 4, 4), dtype=torch.uint8, generator=g)
        self.labels = torch.randint(0, NUM_CLASSES, (n,), generator=g).tolist()
        self.bad = set(bad)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        item = {"index": i, "label": self.labels[i], "ok": i not in self.bad, "pixels": {"release": self.pixels[i]}}
        if i in self.bad:
            item["error"] = f"img{i}: cannot decode image"
        return item

    @staticmethod
    def collate(items):
        return _host(collate(items))


def linear(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(48, NUM_CLASSES)).eval()


class Counted(EvalModule):
    """Counts each step's reads of device values; ``transfer_batch_to_device`` is Lightning's, with what it
    moves put on the simulated device."""

    def validation_step(self, batch, batch_idx):
        with SyncCounter() as counter:
            super().validation_step(batch, batch_idx)
        self.step_reads.append(counter.reads)


@pytest.fixture
def simulated_device(monkeypatch):
    real = DataHooks.transfer_batch_to_device
    monkeypatch.setattr(DataHooks, "transfer_batch_to_device", lambda self, b, d, i: _device(real(self, b, d, i)))
    real_sync = torch.cuda.synchronize
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: calls.append(1) or real_sync(*a, **k))
    return calls


def run(dataset, skip_bad_images=False):
    models = [Candidate("converted", "exact", linear(0), "release"), Candidate("original", "reference", linear(1),
                                                                               "release")]
    module = Counted(models, {"release": Normalization((0.5,) * 3, (0.25,) * 3)}, NUM_CLASSES, reference="original",
                     skip_bad_images=skip_bad_images)
    module.step_reads = []
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False)
    trainer.validate(module, datamodule=EvalDataModule(dataset, batch_size=8, num_workers=0), verbose=False)
    return module, models


@pytest.mark.parametrize("bad", [(), (3, 17)], ids=["all-good", "bad-images-skipped"])
def test_a_step_reads_the_device_at_most_twice_and_keeps_the_plain_figures(simulated_device, bad):
    data = Photos(21, bad)  # batches of 8, 8, 5
    module, models = run(data, skip_bad_images=bool(bad))
    assert len(module.step_reads) == 3
    for reads in module.step_reads:
        assert sum(reads.values()) <= 2, module.step_reads
    assert simulated_device == []
    # the same figures as a plain loop over the good images
    good = [i for i in range(len(data)) if i not in bad]
    x = (data.pixels[good].float() / 255 - 0.5) / 0.25
    labels = torch.tensor([data.labels[i] for i in good])
    res = module.results
    tops = {c.name: ranked(c.module(x), 5) for c in models}
    assert [r[0] for r in res["rows"]] == good and [r[1] for r in res["rows"]] == labels.tolist()
    assert [r[2] for r in res["rows"]] == [{n: tops[n][i].tolist() for n in tops} for i in range(len(good))]
    for name, top in tops.items():
        right = top[:, 0] == labels
        m = res["models"][name]
        assert m.top1 == 100 * int(right.sum()) / len(good) and m.count == len(good)
        assert m.top5 == 100 * int((top == labels[:, None]).any(1).sum()) / len(good)
        for c in range(NUM_CLASSES):
            n = int((labels == c).sum())
            assert m.per_class[c] == pytest.approx(100 * int(right[labels == c].sum()) / n if n else 0.0, abs=1e-5)
    conv = res["models"]["converted"]
    agree = tops["converted"][:, 0] == tops["original"][:, 0]
    assert 0 < int(agree.sum()) < len(good)  # the fixture is not trivial: the two models disagree on some images
    assert conv.agreement == pytest.approx(int(agree.sum()) / len(good), rel=1e-12)
    with torch.no_grad():
        assert conv.max_abs_logit_diff == float((models[0].module(x) - models[1].module(x)).abs().max())
    assert 0 < conv.top1 < 100


def test_the_counter_sees_what_a_gpu_would_wait_for(simulated_device):
    """The counter is honest: each of these reads of a device tensor counts, host tensors do not."""
    host = torch.arange(6).as_subclass(Host)
    with SyncCounter() as c:
        dev = host.to(torch.device("cpu"))  # to the (simulated) device: a move, not a read
        int(host[0]), bool(host.all()), host.tolist(), host[host > 2]  # host values: free
    assert sum(c.reads.values()) == 0 and c.device_moves == 1
    with SyncCounter() as c:
        int(dev[0]), bool(dev.all()), dev.tolist(), dev[dev > 2], dev.cpu(), dev.nonzero(), dev.sum().item()
        torch.ones(3, device="cpu").tolist()
    assert c.reads == Counter({"__int__": 1, "__bool__": 1, "tolist": 2, "boolean mask": 1, "cpu": 1, "nonzero": 1,
                               "item": 1})
