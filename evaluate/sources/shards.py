"""WebDataset tar shards as a data source: local ``.tar`` files, globs (``val-*.tar``), brace patterns
(``val-{000000..000063}.tar``, ``val-{a,b}.tar``) and folders of ``.tar`` files.

Why our own reader: the shards are indexed from their tar headers (``tarfile``, nothing extracted, no
image decoded), which gives a map-style index (shard, data offset, size) per image. The existing
:class:`~evaluate.validation.data_module.ShardSampler` then counts every image exactly once on any number of
processes, also when there are fewer shards than processes, and ``data.subset`` chooses from the labels
alone. ``datasets``/``huggingface_hub`` do not expand brace patterns in local ``data_files`` (only globs),
so :func:`expand_braces` does it (``--streaming`` reads the shards through ``load_dataset("webdataset")``,
see :mod:`evaluate.sources.streaming`).

Sample layout (WebDataset's convention): members ``<key>.<ext>`` that share a key are one sample; the key
is the member name up to the first dot of its last path part. Per key:

* the image: one member ``jpg``, ``jpeg``, ``png`` or ``webp`` (any case; the first of these in that order
  when there are several); its member name is the image id, so ``n01440764/ILSVRC2012_val_00000293.JPEG``
  gives the image id an ImageFolder gives the same file, and keys that are ILSVRC2012 validation names
  (``ILSVRC2012_val_00000001``) get ImageNet-ReaL labels as elsewhere;
* the label: ``cls`` (text: a class index, read as the 0-based sorted-WordNet index, ``index0``, unless
  ``data.label_numbering`` says ``devkit``; a WordNet id or a label of the model is read as such), or
  ``json`` (an object whose ``label``, ``cls``, ``class`` or ``wnid`` field holds a class index, read the
  same way, or a WordNet id / model label; or a bare integer).

A damaged or hostile shard is bad input naming the shard and member: not a plain (uncompressed) tar,
truncated, a member with an absolute or ``..`` name, a link, device or sparse member, a member larger than
:data:`MAX_MEMBER_BYTES`, a label member larger than :data:`MAX_LABEL_BYTES`, a key used twice (a member
repeated, a key whose members are not together, a key in two shards: which image goes with which label
would be a guess), a field starting with ``__`` (WebDataset's ``__key__``/``__url__``), a sample without
image or label. Nothing is ever written to disk.

Hidden members, whose last path part starts with ``.`` or ``__`` (``__meta__.json``), are passed over:
``datasets``' tar reader, which ``--streaming`` reads the images with, skips them, and the loaded and the
streamed reading must see the same samples.
"""

from __future__ import annotations

import glob
import json
import os
import re
import tarfile
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path, PurePosixPath

from cvt_port.errors import BadInput

from .class_labels import class_number, is_number_like, label_token
from ..plan import PlanError

MAX_MEMBER_BYTES = 64 * 2**20  # far larger than any ImageNet photo (the largest is ~15 MB)
MAX_LABEL_BYTES = 2**20
MAX_EXPANSION = 1_000_000  # shard names one brace pattern may expand to
IMAGE_FIELDS = ("jpg", "jpeg", "png", "webp")
LABEL_JSON_FIELDS = ("label", "cls", "class", "wnid")

_KEY_RE = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # webdataset's base_plus_ext (datasets uses the same)
_RANGE_RE = re.compile(r"^(-?\d+)\.\.(-?\d+)$")
_GLOB_CHARS = ("*", "?", "[")


# --------------------------------------------------------------------------- naming the shards


def looks_like_shards(text: str) -> bool:
    """A ``--data`` value meant as shards: a ``.tar`` path, or a pattern (braces or glob) naming ``.tar`` files."""
    return text.lower().endswith(".tar")


def expand_braces(pattern: str) -> list[str]:
    """Bash-style brace expansion: ``{000000..000063}`` (numeric range; zero-padded to the wider end when
    either end is written with a leading zero; descending ranges count down) and ``{a,b,c}`` (comma lists,
    which may themselves hold braces). Several groups multiply out, left to right. A ``{`` with no closing
    ``}`` or no range/comma inside is kept literally."""
    start = pattern.find("{")
    while start >= 0:
        depth, end = 0, -1
        for i in range(start, len(pattern)):
            depth += {"{": 1, "}": -1}.get(pattern[i], 0)
            if depth == 0:
                end = i
                break
        if end < 0:
            return [pattern]
        body = pattern[start + 1:end]
        options = _alternatives(body)
        if options is not None:
            head, tails = pattern[:start], expand_braces(pattern[end + 1:])
            out = []
            for option in options:
                for expanded in expand_braces(option):
                    out.extend(head + expanded + tail for tail in tails)
                    if len(out) > MAX_EXPANSION:
                        raise PlanError("data.source", f"the brace pattern expands to more than {MAX_EXPANSION} "
                                        "names", pattern)
            return out
        start = pattern.find("{", start + 1)
    return [pattern]


def _alternatives(body: str) -> list[str] | None:
    m = _RANGE_RE.match(body)
    if m:
        a, b = m.group(1), m.group(2)
        lo, hi = int(a), int(b)
        if abs(hi - lo) >= MAX_EXPANSION:
            raise PlanError("data.source", f"the range {{{body}}} names more than {MAX_EXPANSION} shards")
        padded = any(len(s.lstrip("-")) > 1 and s.lstrip("-").startswith("0") for s in (a, b))
        width = max(len(a), len(b)) if padded else 0
        step = 1 if hi >= lo else -1
        return [f"{n:0{width}d}" for n in range(lo, hi + step, step)]
    parts, depth, cur = [], 0, ""
    for ch in body:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += {"{": 1, "}": -1}.get(ch, 0)
        cur += ch
    parts.append(cur)
    return parts if len(parts) > 1 else None


def shard_files(text: str) -> list[Path]:
    """The shard files ``text`` names, in order: a ``.tar`` file; a folder's ``*.tar`` files (sorted); a
    brace pattern's names in expansion order, each a file or a glob (sorted); duplicates once."""
    path = Path(text).expanduser()
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix.lower() == ".tar" and not p.name.startswith("."))
        if not found:
            raise PlanError("data.source", "folder holds no .tar shards", text)
        return found
    if path.is_file():
        return [path]
    out, seen = [], set()
    for name in expand_braces(os.path.expanduser(text)):
        matches = sorted(glob.glob(name)) if any(c in name for c in _GLOB_CHARS) else [name]
        if not matches or not os.path.isfile(matches[0]):
            what = "no file matches" if any(c in name for c in _GLOB_CHARS) else "no such shard"
            raise PlanError("data.source", f"{what} {name} (a .tar path, a glob such as val-*.tar or a brace "
                            "pattern such as val-{000000..000063}.tar)", text)
        for m in matches:
            if m not in seen and os.path.isfile(m):
                seen.add(m)
                out.append(Path(m))
    return out


# --------------------------------------------------------------------------- reading the headers


@dataclass(frozen=True)
class Member:
    """Where an image's bytes are: shard file, data offset and size (from its tar header)."""

    shard: str
    offset: int
    size: int
    name: str


@dataclass
class ShardEntry:
    """One sample (key) of a shard, before its label is interpreted."""

    key: str
    image: Member | None = None
    image_field: str | None = None
    cls: bytes | None = None
    json: bytes | None = None
    fields: set = dataclass_field(default_factory=set)  # the member fields seen: each once


def split_key(name: str) -> tuple[str, str] | None:
    """(key, field) of a member name, WebDataset's rule; None for names without an extension."""
    m = _KEY_RE.match(name)
    return (m.group(1), m.group(2)) if m else None


def check_member(shard: str, info: tarfile.TarInfo) -> None:
    """Refuse a member no image shard has: unsafe names, links, devices, sparse or oversized files."""
    name = info.name
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts:
        raise BadInput(f"{shard}: member '{name}' has an absolute or '..' name; not a WebDataset shard, refused")
    if info.isdir():
        return
    if not info.isreg():
        kind = "link" if (info.issym() or info.islnk()) else "device, FIFO or special member"
        raise BadInput(f"{shard}: member '{name}' is a {kind}; a shard holds plain files only, refused")
    if info.issparse():
        raise BadInput(f"{shard}: member '{name}' is a sparse file; refused")
    if info.size > MAX_MEMBER_BYTES:
        raise BadInput(f"{shard}: member '{name}' is {info.size} bytes, more than any image "
                       f"({MAX_MEMBER_BYTES >> 20} MiB); refused")


def index_shard(shard: str | Path, fileobj=None) -> list[ShardEntry]:
    """The samples of one shard, from its headers; the small ``cls``/``json`` members are read into memory,
    images are not read. ``fileobj`` (a stream, e.g. a remote file) is read once in tarfile's streaming
    mode; a local path is read with seeks over the image bytes."""
    shard = str(shard)
    entries: dict[str, ShardEntry] = {}
    order: list[str] = []
    size = None if fileobj is not None else os.path.getsize(shard)
    try:
        tar = tarfile.open(fileobj=fileobj, mode="r|") if fileobj is not None else tarfile.open(shard, mode="r:")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BadInput(f"{shard}: not a readable uncompressed tar shard ({exc})") from None
    last = None
    with tar:
        try:
            for info in tar:
                last = info.name
                check_member(shard, info)
                if info.isdir():
                    continue
                if size is not None and info.offset_data + info.size > size:
                    raise BadInput(f"{shard}: truncated inside member '{info.name}'")
                if PurePosixPath(info.name).name.startswith((".", "__")):
                    continue  # hidden, as datasets' tar reader (the streamed reading) has them
                parts = split_key(info.name)
                if parts is None:
                    continue
                key, field = parts
                entry = entries.get(key)
                if entry is None:
                    entry = entries[key] = ShardEntry(key)
                    order.append(key)
                elif key != order[-1]:
                    raise BadInput(f"{shard} key '{key}': member '{info.name}' comes after other keys' members; a "
                                   "key is used once, its members together (rewrite the shard)")
                _add_field(shard, tar, info, entry, field)
        except BadInput:
            raise
        except (tarfile.TarError, OSError, EOFError) as exc:
            after = f" after member '{last}'" if last else ""
            raise BadInput(f"{shard}: damaged or truncated tar{after} ({exc})") from None
        if size is not None and size < tar.offset + 2 * tarfile.BLOCKSIZE:  # no end-of-archive blocks: cut short
            after = f" after member '{last}'" if last else ""
            raise BadInput(f"{shard}: truncated{after} (the tar's end-of-archive blocks are missing)")
    return [entries[k] for k in order]


def _add_field(shard: str, tar: tarfile.TarFile, info: tarfile.TarInfo, entry: ShardEntry, field: str) -> None:
    if field.startswith("__"):  # would overwrite the streamed sample's own __key__/__url__
        raise BadInput(f"{shard} key '{entry.key}': member '{info.name}' has a field starting with '__', which "
                       "WebDataset reserves (__key__, __url__); rename or drop it")
    if field in entry.fields:
        raise BadInput(f"{shard} key '{entry.key}': member '{info.name}' is there twice; a key is used once, each "
                       "member once (rewrite the shard)")
    entry.fields.add(field)
    lowered = field.lower()
    if lowered in IMAGE_FIELDS:
        if entry.image is not None:
            if IMAGE_FIELDS.index(lowered) < IMAGE_FIELDS.index(entry.image_field.lower()):
                entry.image, entry.image_field = Member(shard, info.offset_data, info.size, info.name), field
            return
        entry.image, entry.image_field = Member(shard, info.offset_data, info.size, info.name), field
    elif lowered in ("cls", "json"):
        if info.size > MAX_LABEL_BYTES:
            raise BadInput(f"{shard}: member '{info.name}' is {info.size} bytes, too large for a label; refused")
        fh = tar.extractfile(info)  # into memory; never to disk
        data = fh.read() if fh is not None else b""
        if len(data) != info.size:
            raise BadInput(f"{shard}: truncated inside member '{info.name}'")
        setattr(entry, lowered, data)


def entry_label(entry: ShardEntry, shard: str, label2id, numbering) -> int:
    """The class index of one sample, from ``cls`` or else ``json`` (see the module docstring)."""
    where = f"{shard} key '{entry.key}'"
    if entry.cls is not None:
        return _label_value(entry.cls.decode("utf-8", "replace").strip(), f"{where} member cls", label2id, numbering)
    if entry.json is not None:
        try:
            obj = json.loads(entry.json)
        except ValueError as exc:
            raise BadInput(f"{where}: member json is not JSON ({exc})") from None
        if isinstance(obj, dict):
            field = next((f for f in LABEL_JSON_FIELDS if f in obj), None)
            if field is None:
                raise BadInput(f"{where}: member json has none of the fields {', '.join(LABEL_JSON_FIELDS)}")
            obj, where = obj[field], f"{where} member json field '{field}'"
        else:
            where = f"{where} member json"
        if isinstance(obj, bool) or not isinstance(obj, (int, str)):
            raise BadInput(f"{where}: {obj!r} is not a class index, WordNet id or label")
        return _label_value(str(obj), where, label2id, numbering)
    raise BadInput(f"{where}: has no cls or json member (its label)")


def _label_value(token: str, where: str, label2id, numbering) -> int:
    if is_number_like(token):
        number = class_number(token, where)  # canonical decimals only: '007' is refused, not read as 7
        if numbering is not None:
            return numbering(number, where)
        return number  # cls is the 0-based class index (index0) unless data.label_numbering says otherwise
    return label_token(token, label2id, where, numbering)


# --------------------------------------------------------------------------- the data source


class ShardImages:
    """Map-style access to the images of the shards: ``[i]["image"]`` is ``{"bytes", "path"}`` read with
    one seek from the shard (nothing extracted). Picklable: DataLoader workers open the files themselves."""

    def __init__(self, members: list[Member]):
        self.members = members

    def __len__(self) -> int:
        return len(self.members)

    def __getitem__(self, i: int) -> dict:
        m = self.members[i]
        with open(m.shard, "rb") as fh:
            fh.seek(m.offset)
            data = fh.read(m.size)
        if len(data) != m.size:
            raise OSError(f"{m.shard}: member '{m.name}' is cut short ({len(data)} of {m.size} bytes)")
        return {"image": {"bytes": data, "path": m.name}}


def shard_samples(indexed: list[tuple[str, list[ShardEntry]]], label2id, numbering):
    """(rows, members): one (image id, label) per key with an image, in shard order, and where its image is."""
    samples, members, seen, keys = [], [], {}, {}
    for shard, entries in indexed:
        for e in entries:
            if e.key in keys:
                raise BadInput(f"{keys[e.key]} key '{e.key}': is used again in {shard}; a key is used once in all "
                               "the shards (rewrite them)")
            keys[e.key] = shard
            if e.image is None:
                raise BadInput(f"{shard} key '{e.key}': has no {'/'.join(IMAGE_FIELDS)} member (its image)")
            if e.image.name in seen:
                raise BadInput(f"{shard}: member '{e.image.name}' is also in {seen[e.image.name]}; every image once")
            seen[e.image.name] = shard
            samples.append((e.image.name, entry_label(e, shard, label2id, numbering)))
            members.append(e.image)
    return samples, members


def read_shards(text: str, label2id, numbering) -> tuple[list[tuple[str, int]], ShardImages]:
    """(image id, label) of every image of the shards ``text`` names, and map-style access to the images."""
    files = shard_files(text)
    rows, members = shard_samples([(str(f), index_shard(f)) for f in files], label2id, numbering)
    if not rows:
        raise BadInput(f"{text}: the shards hold no images")
    return rows, ShardImages(members)
