"""The original on its sample only (``--reference-sample``): its images queued from the pass's batches and run in
full batches.

Why a queue: the sample (:mod:`evaluate.verdict.reference_sample`) is spread over the data, a few images per
batch; a forward of 3 images costs far more per image than one of 32 (and under ``--compile`` every other size
would be a new graph), so the saving would melt away. The sampled images' pixels, labels and the other models'
logits and top-k wait here until a full batch is there (the last, short one at the end of the pass, padded under
``--compile`` like any short batch); then the original runs, its counts and the paired counts (agreement, max
|logit diff|, the others' top-1 on the same images) are added, and its top-k and top-1 probability are written
into the rows those images already have. The rows outside the sample keep no entry for the original.
"""

from __future__ import annotations

import torch

from .metrics import ranked, top1_probability


class SampleQueue:
    """Sampled images waiting for the original, run ``batch`` at a time through ``module`` (the EvalModule)."""

    def __init__(self, module, key: str, positions: frozenset[int], batch: int):
        self.module, self.key, self.positions, self.batch = module, key, positions, max(1, batch)
        self.parts: list[tuple] = []

    @property
    def pending(self) -> int:
        return sum(len(p[1]) for p in self.parts)

    def add(self, index: torch.Tensor, target: torch.Tensor, pixels: dict, logits: dict, top: dict,
            slots: list[tuple[dict, dict]]) -> None:
        """The batch's sampled rows (``index``: positions in the run's image list, on the host; ``slots``: each
        row's top-k and probability dicts), queued; full batches of them run now."""
        rows = [i for i, idx in enumerate(index.tolist()) if idx in self.positions]
        if not rows:
            return
        m = self.module
        on = torch.tensor(rows, dtype=torch.long).to(target.device, non_blocking=True)
        ones = torch.ones(len(rows), device=target.device)
        t = target.index_select(0, on)
        m.sample_count.update(ones)
        m.sample_images.update(t, ones)
        ref = next(c for c in m.candidates if c.name == m.reference)
        x = m.normalizations[ref.preprocessing](pixels[ref.preprocessing].index_select(0, on))
        others = {n: (top[n].index_select(0, on), logits[n].index_select(0, on)) for n in top}
        self.parts.append((x, t, others, [slots[i] for i in rows]))
        self.drain()

    def drain(self, everything: bool = False) -> None:
        """Run the original on each full batch queued (and on the rest with ``everything``)."""
        while self.parts and (self.pending >= self.batch or everything):
            x = torch.cat([p[0] for p in self.parts])
            t = torch.cat([p[1] for p in self.parts])
            others = {n: tuple(torch.cat([p[2][n][k] for p in self.parts]) for k in (0, 1)) for n in self.parts[0][2]}
            slots = [s for p in self.parts for s in p[3]]
            k = min(self.batch, len(x))
            self.parts = [] if k == len(x) else [(x[k:], t[k:], {n: (v[0][k:], v[1][k:]) for n, v in others.items()},
                                                   slots[k:])]
            self._run(x[:k], t[:k], {n: (v[0][:k], v[1][:k]) for n, v in others.items()}, slots[:k])

    def _run(self, x: torch.Tensor, t: torch.Tensor, others: dict, slots: list) -> None:
        m, key = self.module, self.key
        ref = next(c for c in m.candidates if c.name == m.reference)
        out = m.forward_candidate(ref, x)
        pred = ranked(out, m.topk, m.keep)
        right = (pred[:, 0] == t).float()
        m.hits1[key].update(right)
        m.hits5[key].update((pred == t[:, None]).any(dim=1).float())
        m.class_hits[key].update(t, right)
        m.paired({**{n: v[1] for n, v in others.items()}, ref.name: out},
                  {**{n: v[0] for n, v in others.items()}, ref.name: pred}, t)
        host = torch.cat([pred.float(), top1_probability(out, pred)], dim=1).cpu().tolist()
        for (tops, probs), h in zip(slots, host):
            tops[ref.name] = [int(c) for c in h[:-1]]
            probs[ref.name] = h[-1]
