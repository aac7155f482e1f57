"""``data.streaming``: parquet files, WebDataset shards and Hub datasets read as a stream, never whole.

Two passes, so that ``data.subset`` costs the labels only:

1. **Labels and keys** (:func:`discover_streaming`): parquet through pyarrow's column projection (the label
   column and the images' stored file names, ``image.path``; the image bytes are not read), shards through
   their tar headers and small ``cls``/``json`` members (:func:`evaluate.sources.shards.index_shard`; a remote shard
   is read once in tarfile's streaming mode, its image bytes skipped). The samples, their ids, labels and
   ImageNet-ReaL eligibility come out exactly as the non-streaming layouts give them, so the subset is the
   same images.
2. **Images** (:class:`StreamRows`): ``datasets.load_dataset(builder, data_files=[file], streaming=True)``
   (an IterableDataset; parquet with ``columns=[image column]``), read forward from where the last image
   was; rows nobody asked for are passed over without decoding (the image feature is cast to
   ``decode=False``; :meth:`~evaluate.sources.samples.DataSource.load_image` decodes only the rows requested).
   Memory holds one record batch of 16 rows (parquet) or one tar member group, and nothing is written
   to disk.

Every image once on any number of processes: the rows are a map-style index (position -> file, row), so
the run's :class:`~evaluate.validation.data_module.ShardSampler` assigns them as for any layout; each process (and
DataLoader worker) asks for increasing positions, which :class:`StreamRows` serves by reading forward.
(``datasets.distributed.split_dataset_by_node`` is not used: it would hand each rank rows without their
global position, which the per-image predictions need, and with fewer files than ranks it has every rank
read every file anyway.) A position behind the stream's reopens that file's stream.

A Hub id is resolved to its data files by ``datasets.load_dataset_builder(id, revision=...)``
(:func:`hub_data_files`): ``data.revision`` pins the commit, and the files are then streamed over ``hf://``.
"""

from __future__ import annotations

import bisect
from pathlib import Path
from types import SimpleNamespace

from cvt_port.errors import BadInput, first_line

from ..plan import PlanError

STREAMABLE = "parquet file(s), WebDataset .tar shards or a Hub dataset id"


def hub_data_files(repo_id: str, split: str, revision: str | None) -> tuple[str, list[str]]:
    """(builder "parquet" | "webdataset", the split's data files as ``hf://`` URLs): the one call that reaches
    the Hub for a streamed dataset (tests replace it)."""
    import datasets

    builder = datasets.load_dataset_builder(repo_id, revision=revision)
    files = (builder.config.data_files or {}).get(split)
    if not files:
        raise PlanError("data.split", f"no such split in {repo_id} (it has {', '.join(builder.config.data_files or {})})",
                        split)
    kind = type(builder).__module__.rsplit(".", 1)[-1]
    if kind not in ("parquet", "webdataset"):
        raise PlanError("data.streaming", f"{repo_id} is stored as {kind}; streaming reads parquet or webdataset")
    return kind, [str(f) for f in files]


def _open(name: str):
    if Path(name).exists():
        return open(name, "rb")
    import fsspec

    return fsspec.open(name, "rb").open()


def discover_streaming(text: str, *, split: str, label2id, image_column: str | None, label_column: str | None,
                       numbering, revision: str | None):
    """The :class:`~evaluate.sources.samples.DataSource` of a streamed source (layout ``streaming-parquet`` or
    ``streaming-webdataset``), its samples from labels and keys alone (see the module docstring)."""
    from .dataset_reader import HUB_ID_RE, files_for_split
    from .shards import looks_like_shards, shard_files

    path = Path(text).expanduser()
    if revision is not None and (path.exists() or looks_like_shards(text)):
        raise PlanError("data.revision", "pins a Hub dataset; this is a local path", revision)
    if looks_like_shards(text) or (path.is_dir() and any(p.suffix.lower() == ".tar" for p in path.iterdir())):
        kind, files = "webdataset", [str(f) for f in shard_files(text)]
    elif path.is_file() and path.suffix.lower() == ".parquet":
        kind, files = "parquet", [str(path)]
    elif path.is_dir() and any(path.rglob("*.parquet")):
        kind, files = "parquet", [str(f) for f in files_for_split(sorted(path.rglob("*.parquet")), split)]
    elif not path.exists() and HUB_ID_RE.match(text) and not text.startswith((".", "~")):
        try:
            kind, files = hub_data_files(text, split, revision)
        except BadInput:
            raise
        except Exception as exc:  # network, auth, unknown repo or revision: the user's to fix
            raise PlanError("data.source", "not an existing path, and resolving it as a Hugging Face Hub dataset "
                            f"(split '{split}') failed: {first_line(exc, typed=True)}", text) from None
    else:
        raise PlanError("data.streaming", f"reads {STREAMABLE}, not {text}; run without it")
    if kind == "webdataset":
        return _shards_source(text, files, label2id, numbering)
    return _parquet_source(text, files, label2id, image_column, label_column, numbering)


def _shards_source(text: str, files: list[str], label2id, numbering):
    from .samples import DataSource, Sample, all_ilsvrc
    from .shards import index_shard, shard_samples, split_key

    indexed = []
    for f in files:
        if Path(f).exists():
            indexed.append((f, index_shard(f)))
        else:
            with _open(f) as fh:
                indexed.append((f, index_shard(f, fileobj=fh)))
    rows, members = shard_samples(indexed, label2id, numbering)
    samples = [Sample(image_id, label, k) for k, (image_id, label) in enumerate(rows)]
    if not samples:
        raise BadInput(f"{text}: the shards hold no images")
    counts = [sum(1 for m in members if m.shard == f) for f in files]
    keys, fields = zip(*(split_key(m.name) for m in members))
    rows = StreamRows("webdataset", files, counts, fields=list(fields), keys=list(keys))
    return DataSource("streaming-webdataset", samples, all_ilsvrc(samples), text, dataset=rows, image_column="image")


def _parquet_source(text: str, files: list[str], label2id, image_column, label_column, numbering):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .dataset_reader import from_dataset, is_image_feature, pick_column

    tables, counts, features = [], [], None
    for f in files:
        try:
            with _open(f) as fh:
                pf = pq.ParquetFile(fh)
                if features is None:
                    features = datasets.Features.from_arrow_schema(pf.schema_arrow)
                    names = SimpleNamespace(column_names=list(features))
                    auto = [c for c in features if is_image_feature(features[c])] + ["image", "img"]
                    img_col = pick_column(names, image_column, "data.image_column", auto, "image")
                    lab_col = pick_column(names, label_column, "data.label_column", ("label", "labels"), "label")
                    img_type = pf.schema_arrow.field(img_col).type
                    with_path = pa.types.is_struct(img_type) and img_type.get_field_index("path") >= 0
                columns = [lab_col] + ([f"{img_col}.path"] if with_path else [])
                tables.append(pf.read(columns=columns))  # the label column (and file names): no image bytes
                counts.append(pf.metadata.num_rows)
        except BadInput:
            raise
        except Exception as exc:
            raise BadInput(f"{f}: cannot read the parquet file ({first_line(exc, typed=True)})") from None
    table = pa.concat_tables(tables)
    paths = table[img_col].combine_chunks().field("path").to_pylist() if with_path else [None] * len(table)
    labels_only = datasets.Dataset.from_dict(
        {img_col: [{"bytes": None, "path": p} for p in paths], lab_col: table[lab_col].to_pylist()},
        features=datasets.Features({img_col: datasets.Image(decode=False), lab_col: features[lab_col]}))
    source = from_dataset(labels_only, text, label2id, img_col, lab_col, numbering)
    source.layout = "streaming-parquet"
    source.dataset = StreamRows("parquet", files, counts, column=img_col)
    return source


class StreamRows:
    """Row ``i`` of the concatenated files (``[i][column]`` is the undecoded image cell), served from a
    forward-reading ``datasets`` stream per file (see the module docstring). Picklable: a DataLoader worker
    opens its own stream."""

    def __init__(self, builder: str, files: list[str], counts: list[int], column: str | None = None,
                 fields: list[str] | None = None, keys: list[str] | None = None):
        self.builder, self.files, self.column = builder, list(files), column
        self.starts = [0]
        for c in counts:
            self.starts.append(self.starts[-1] + c)
        self.fields, self.keys = fields, keys
        self._stream = None  # (file index, iterator, next row within the file)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_stream": None}

    def __len__(self) -> int:
        return self.starts[-1]

    def __getitem__(self, i: int) -> dict:
        k = bisect.bisect_right(self.starts, i) - 1
        row = i - self.starts[k]
        if self._stream is None or self._stream[0] != k or self._stream[2] > row:
            self._stream = (k, _rows(self._open_stream(self.files[k])), 0)
        _, it, pos = self._stream
        key = self.keys[i] if self.keys is not None else None
        while True:
            example = next(it, None)
            if example is None:
                self._stream = None
                raise OSError(f"{self.files[k]}: the stream ended before row {row}")
            if key is not None and example.get("__key__") != key:
                continue  # a member group the index left out (hidden names)
            if key is not None or pos == row:
                self._stream = (k, it, pos + 1 if key is None else row + 1)
                value = example[self.fields[i]] if self.fields is not None else example[self.column]
                return {"image": value} if self.fields is not None else {self.column: value}
            pos += 1

    def _open_stream(self, file: str):
        import datasets

        # parquet: the image column only, in record batches of a few rows (default: a whole row group)
        kwargs = {"columns": [self.column], "batch_size": 16} if self.builder == "parquet" else {}
        ds = datasets.load_dataset(self.builder, data_files=[file], split="train", streaming=True, **kwargs)
        for name, feature in (ds.features or {}).items():
            if isinstance(feature, datasets.Image):
                ds = ds.cast_column(name, datasets.Image(decode=False))
        return ds


def _rows(ds, batch: int = 16):
    """The stream's rows, ``batch`` at a time. ``IterableDataset.iter`` rather than ``iter(ds)``: inside a
    DataLoader worker, ``datasets`` would keep only that worker's share of the file's shards, while here the
    worker itself decides which rows it reads (the sampler's positions)."""
    for rows in ds.iter(batch_size=batch):
        columns = list(rows)
        for j in range(len(rows[columns[0]]) if columns else 0):
            yield {c: rows[c][j] for c in columns}
