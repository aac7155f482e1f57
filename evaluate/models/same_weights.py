"""Whether a converted folder's weights are, provably, its original's: the condition of ``--reference-sample``.

Running the original only on a sample (:mod:`evaluate.verdict.reference_sample`) is sound only when nothing but
the conversion stands between the original and the converted weights, and the conversion was exact. cvt_port's
own record says so, in three facts this module checks against the files as they are now:

* ``conversion.json``'s ``parity``: the converted model's logits equal the original's within its tolerance
  on the conversion's probe batch (the conversion refuses to write otherwise, so this is a record of that check);
* its ``source.sha256`` is the sha256 of the ``--reference`` file given now: the same original;
* its ``weights.sha256`` is the sha256 of the folder's weight file now: the weights the conversion wrote,
  not edited or fine-tuned since.

Any of them missing or different: a one-line :class:`~evaluate.plan.PlanError` naming ``models.reference_sample``
(exit status 2), and the way out (run the original on every image).
"""

from __future__ import annotations

from pathlib import Path

from cvt_port.provenance import sha256_of

from ..plan import PlanError
from .folders import LoadedFolder

FIELD = "models.reference_sample"
WAY_OUT = "run the original on every image (without models.reference_sample)"


def _refuse(why: str, folder: str) -> PlanError:
    return PlanError(FIELD, f"{why}; {WAY_OUT}", folder)


def prove_same_weights(folder: LoadedFolder, reference: str | Path, weights_sha256: str | None) -> dict:
    """The proof (what was compared) that ``folder``'s weights (``weights_sha256``: their hash, read now) are the
    exact conversion of ``reference``; a :class:`PlanError` when the record or the files do not prove it."""
    facts = folder.conversion_facts()
    if facts is None:
        raise _refuse("the model folder has no conversion.json (the conversion's parity record)", folder.source)
    parity = facts.get("parity") or {}
    diff, tol = parity.get("max_abs_logit_diff"), parity.get("tolerance")
    if not (isinstance(diff, (int, float)) and isinstance(tol, (int, float)) and diff <= tol):
        raise _refuse(f"conversion.json records no exact parity (max |logit diff| {diff}, tolerance {tol})",
                      folder.source)
    original = (facts.get("source") or {}).get("sha256")
    given = sha256_of(Path(reference))
    if original != given:
        raise _refuse(f"the reference file's sha256 {given[:12]}... is not the one conversion.json records as its "
                      f"source ({str(original)[:12]}...)", folder.source)
    written = (facts.get("weights") or {}).get("sha256")
    if written is None:
        raise _refuse("conversion.json records no sha256 of the weights it wrote (converted by an older cvt_port: "
                      "convert again)", folder.source)
    if written != weights_sha256:
        raise _refuse("the folder's weights are not the ones the conversion wrote (their sha256 differs from "
                      "conversion.json's weights.sha256)", folder.source)
    return {"parity_max_abs_logit_diff": diff, "parity_tolerance": tol, "original_sha256": given,
            "weights_sha256": written}
