"""How the labels each data source carries become class indices of the model (the rules are in
:mod:`evaluate.sources.layouts`' docstring and ``shared/spec/imagenet-labels.md``): WordNet ids, the
model's label names, ClassLabel positions, and class numbers in a numbering the user states
(``index0`` or the ILSVRC2012 devkit's ids through its synset table). Nothing here guesses: a
number whose numbering is not stated is a one-line :class:`~cvt_port.errors.BadInput`.
"""

from __future__ import annotations

import re
from pathlib import Path

from cvt_port.errors import BadInput, first_line
from cvt_port.labels import wnid_to_index

from ..plan import PlanError

LABEL_NUMBERINGS = ("index0", "devkit")
NUMBERING_HINT = ("use data.label_numbering index0 (0-based positions among the 1000 sorted WordNet ids) or "
                  "data.label_numbering devkit with data.devkit_map FILE (the ILSVRC2012 devkit's 1-based ids; FILE: "
                  "lines '<ILSVRC2012_ID> <WNID>' from the devkit's data/meta.mat)")


def class_index(name: str, label2id: dict[str, int] | None) -> int | None:
    """Class index of a class name: WordNet id -> sorted-wnid position; else the model's label2id."""
    idx = wnid_to_index().get(name)
    if idx is not None:
        return idx
    if label2id and name in label2id:
        return int(label2id[name])
    return None


def stated_numbering(label_numbering: str | None, devkit_map: str | Path | None):
    """The stated numbering of class numbers as a function (number, where) -> class index, or None."""
    if label_numbering is None:
        if devkit_map is not None:
            raise PlanError("data.devkit_map", "only used with data.label_numbering devkit; add it", devkit_map)
        return None
    if label_numbering not in LABEL_NUMBERINGS:
        raise PlanError("data.label_numbering", f"choose one of {', '.join(LABEL_NUMBERINGS)}", label_numbering)
    if label_numbering == "index0":
        if devkit_map is not None:
            raise PlanError("data.devkit_map", "only used with data.label_numbering devkit, not index0", devkit_map)

        def index0(number: int, where: str) -> int:
            if number < 0:
                raise BadInput(f"{where}: class number {number} is negative (data.label_numbering index0 counts from 0)")
            return number

        return index0
    if devkit_map is None:
        raise PlanError("data.label_numbering", "needs data.devkit_map FILE: 1000 lines '<ILSVRC2012_ID> <WNID>', "
                        "the devkit's synset table from its data/meta.mat (exported with scipy.io.loadmat, see "
                        "evaluate.sources.layouts)", label_numbering)
    table = read_devkit_map(Path(devkit_map))

    def devkit(number: int, where: str) -> int:
        if number not in table:
            raise BadInput(f"{where}: {number} is not an ILSVRC2012_ID of {devkit_map} (1..1000)")
        return table[number]

    return devkit


def read_devkit_map(path: Path) -> dict[int, int]:
    """ILSVRC2012_ID -> class index, from lines ``<ID> <WNID> [words]`` (or ``<WNID> <ID> ...``)."""
    where = str(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError("data.devkit_map", f"cannot read it ({first_line(exc, typed=True)})", path) from None
    index = wnid_to_index()
    table: dict[int, int] = {}
    seen: set[str] = set()
    for n, line in enumerate(lines, start=1):
        tokens = line.replace(",", " ").split()
        if not tokens or tokens[0].startswith("#"):
            continue
        pair = tokens[:2][::-1] if len(tokens) > 1 and tokens[0] in index else tokens[:2]
        if len(pair) < 2 or not pair[0].isdigit() or pair[1] not in index:
            raise BadInput(f"{where} line {n}: expected '<ILSVRC2012_ID> <WNID>' of an ImageNet-1k class, got {line.strip()[:60]!r}")
        number, wnid = int(pair[0]), pair[1]
        if number in table or wnid in seen:
            raise BadInput(f"{where} line {n}: ILSVRC2012_ID {number} or {wnid} appears twice")
        table[number] = index[wnid]
        seen.add(wnid)
    if sorted(table) != list(range(1, 1001)):
        raise BadInput(f"{where}: has {len(table)} classes; the devkit's table has the 1000 ILSVRC2012_IDs 1..1000")
    return table


# a class number written as text: the canonical decimal only (ImageNet-V2's folders are 0..999). "010" or "007"
# read as 10 or 7 would merge folder 010 with folder 10 without a word; a sign, a space or another script's digits
# ("٣") are refused the same way, never read as a number
_NUMBER_LIKE = re.compile(r"\s*[+-]?\d+\s*")
_CANONICAL = re.compile(r"0|[1-9][0-9]*", re.ASCII)


def is_number_like(token: str) -> bool:
    """Does ``token`` look like a class number, canonical or not (``7``, ``007``, ``+7``, ``-1``, ``٣``)?"""
    return _NUMBER_LIKE.fullmatch(token) is not None


def class_number(token: str, where: str) -> int:
    """A number-like ``token`` (:func:`is_number_like`) as a class number: the canonical decimal (``0``, ``7``,
    ``999``) as its value, anything else written for a number (``010``, ``+7``, ``-1``, `` 7``) a one-line
    :class:`BadInput` naming ``where``."""
    if not _CANONICAL.fullmatch(token):
        raise BadInput(f"{where}: {token!r} is not a class number as written 0, 1, .., 999 (no leading zero, sign "
                       f"or space: '010' and '10' would be one class); rename it to its canonical number")
    return int(token)


def label_token(token: str, label2id: dict[str, int] | None, where: str, numbering) -> int:
    """A label written as text: a WordNet id, a label of the model, or a class number in the stated
    numbering (canonical decimals only, :func:`class_number`). A number with no numbering stated is bad input
    unless the model calls a class that."""
    token = token.strip()
    if is_number_like(token):
        if numbering is None and label2id and token in label2id:
            return int(label2id[token])
        number = class_number(token, where)
        if numbering is not None:
            return numbering(number, where)
        raise BadInput(f"{where}: '{token}' is a class number, but nothing says which numbering; {NUMBERING_HINT}")
    idx = class_index(token, label2id)
    if idx is None:
        raise BadInput(f"{where}: '{token}' is neither a class number, an ImageNet WordNet id nor a label of the model")
    return idx


def classlabel_translation(names: list[str], label2id: dict[str, int] | None, where: str) -> list[int] | None:
    """Class index of each ClassLabel position, or None when the positions are the class indices.

    Names that are all WordNet ids map by WordNet id (an "imagefolder" copy of an ImageNet folder);
    names that are all distinct labels of the model, to distinct classes, map through label2id.
    Otherwise the positions are used as they are only when there is one name per class of the
    model (the Hub's ImageNet-1k: its names are readable, "crane" twice, and its positions are the
    standard index); fewer or more names cannot be class indices of this model: bad input."""
    wnids = wnid_to_index()
    if all(n in wnids for n in names):
        return [wnids[n] for n in names]
    if label2id and all(n in label2id for n in names) and len(set(names)) == len(names) and \
            len({int(label2id[n]) for n in names}) == len(names):
        return [int(label2id[n]) for n in names]
    classes = max(int(v) for v in label2id.values()) + 1 if label2id else len(wnids)
    if len(names) == classes:
        return None
    raise BadInput(f"{where}: a ClassLabel of {len(names)} names (e.g. {names[0]!r}) that are neither ImageNet "
                   f"WordNet ids nor labels of the model, so its integers are positions among those names, not "
                   f"indices of the model's {classes} classes; name the classes by WordNet id or the model's labels")
