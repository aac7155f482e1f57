"""WebDataset tar shards as --data (issue 15.1): local files, globs, brace patterns and folders of shards; the
same images as a folder give identical labels and predictions; every image once on any number of processes;
a damaged or hostile shard is bad input naming shard and member, and nothing is extracted."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest
from PIL import Image

import evaluate.sources.shards as shards
from cvt_port.errors import BadInput
from evaluate.api import evaluate_model
from evaluate.pixels.dataset import EvalDataset
from evaluate.sources.layouts import discover
from evaluate.validation.data_module import ShardSampler
from evaluate.plan import DataSpec
from evaluate.sources.inputs import prepare_data
from evalkit import evaluate_cli, make_half_right_imagefolder

PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-sample-100" / "val"
CPU = dict(accelerator="cpu", devices=1, batch_size=8, num_workers=0)


def add_member(tar: tarfile.TarFile, name: str, data: bytes, **info) -> None:
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    for k, v in info.items():
        setattr(ti, k, v)
    tar.addfile(ti, io.BytesIO(data))


def write_shards(folder: Path, out: Path, n_shards: int, label: str = "cls") -> list[Path]:
    """The ImageFolder's images (ids ``<wnid>/<file>``, sorted as the folder lists them) packed in order into
    ``n_shards`` tars; each image's member is its relative path, its label a ``cls`` index or a ``json`` wnid
    (``label="mixed"``: alternately)."""
    source = discover(folder)
    out.mkdir(parents=True, exist_ok=True)
    per = -(-len(source.samples) // n_shards)
    paths = []
    for k in range(n_shards):
        path = out / f"val-{k:06d}.tar"
        with tarfile.open(path, "w") as tar:
            for j, s in enumerate(source.samples[k * per:(k + 1) * per]):
                key = s.image_id.rsplit(".", 1)[0]
                add_member(tar, s.image_id, Path(s.ref).read_bytes())
                if label == "cls" or (label == "mixed" and j % 2 == 0):
                    add_member(tar, key + ".cls", str(s.label).encode())
                else:
                    add_member(tar, key + ".json", json.dumps({"wnid": s.image_id.split("/")[0]}).encode())
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """The generated half-right folder (non-trivial figures, always) and the real photos when ../shared is there."""
    root = tmp_path_factory.mktemp("gen") / "val"
    make_half_right_imagefolder(root)
    return [root] + ([PHOTOS] if PHOTOS.is_dir() else [])


def test_brace_patterns_expand_like_bash():
    assert shards.expand_braces("val-{000000..000003}.tar") == [f"val-{i:06d}.tar" for i in range(4)]
    assert shards.expand_braces("v{8..11}") == ["v8", "v9", "v10", "v11"]
    assert shards.expand_braces("v{3..1}") == ["v3", "v2", "v1"]
    assert shards.expand_braces("{a,b}-{0..1}.tar") == ["a-0.tar", "a-1.tar", "b-0.tar", "b-1.tar"]
    assert shards.expand_braces("x{a,{b,c}}") == ["xa", "xb", "xc"]
    assert shards.expand_braces("plain{x}.tar") == ["plain{x}.tar"]


def test_every_way_of_naming_shards_reads_the_same_samples(folders, tmp_path):
    folder = folders[0]
    write_shards(folder, tmp_path / "sh", 4)
    ref = [(s.image_id, s.label) for s in discover(folder).samples]
    for data in [tmp_path / "sh", str(tmp_path / "sh" / "val-{000000..000003}.tar"), str(tmp_path / "sh" / "val-*.tar"),
                 str(tmp_path / "sh" / "val-{000000,000001,000002,000003}.tar")]:
        source = discover(data)
        assert source.layout == "webdataset" and source.is_ilsvrc_val
        assert [(s.image_id, s.label) for s in source.samples] == ref, data
    one = discover(tmp_path / "sh" / "val-000001.tar")
    assert [(s.image_id, s.label) for s in one.samples] == ref[26:52]
    with pytest.raises(BadInput, match="no such shard"):
        discover(str(tmp_path / "sh" / "val-{000000..000004}.tar"))


def test_labels_from_cls_and_json_fields(tmp_path):
    path = tmp_path / "s.tar"
    png = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(png, format="PNG")
    with tarfile.open(path, "w") as tar:
        for key, label in [("a", {"cls": b"7"}), ("b", {"json": b'{"label": 12}'}), ("c", {"json": b'{"cls": "n01440764"}'}),
                           ("d", {"json": b"5"})]:
            add_member(tar, key + ".png", png.getvalue())
            for field, data in label.items():
                add_member(tar, f"{key}.{field}", data)
    assert [(s.image_id, s.label) for s in discover(path).samples] == [("a.png", 7), ("b.png", 12), ("c.png", 0),
                                                                        ("d.png", 5)]
    src = discover(path)
    assert src.load_image(src.samples[0]).getpixel((0, 0)) == (1, 2, 3)
    copy = __import__("pickle").loads(__import__("pickle").dumps(src))  # what a DataLoader worker receives
    assert copy.load_image(copy.samples[3]).getpixel((0, 0)) == (1, 2, 3)


def test_same_images_as_shards_give_identical_labels_and_predictions(tiny, folders, tmp_path):
    for n, folder in enumerate(folders):
        write_shards(folder, tmp_path / f"sh{n}", 3, label="mixed")
        by_folder = evaluate_model(model=tiny["hf"], config=tiny["yaml"], data=folder, output=tmp_path / f"f{n}", **CPU)
        by_shards = evaluate_model(model=tiny["hf"], config=tiny["yaml"],
                                   data=str(tmp_path / f"sh{n}" / "val-{000000..000002}.tar"), output=tmp_path / f"s{n}",
                                   **CPU)
        a = (tmp_path / f"f{n}" / "predictions.csv").read_bytes()
        assert a == (tmp_path / f"s{n}" / "predictions.csv").read_bytes()
        assert len(a.splitlines()) == 1 + len(discover(folder).samples)
        assert by_shards.record["layout"] == "webdataset"
        for key in ("top1", "top5", "real_top1", "num_samples"):
            assert by_shards.record[key] == by_folder.record[key], key
        if n == 0:  # the generated folder: about half right, ReaL differs from top-1
            assert 0.3 < by_shards.record["top1"] / 100 < 0.8 and by_shards.record["real_top1"] != by_shards.record["top1"]


@pytest.mark.parametrize("world", [1, 2, 3, 5, 7])
def test_every_image_once_on_any_number_of_processes(folders, tmp_path, world):
    write_shards(folders[0], tmp_path / "sh", 2)  # fewer shards than processes for world > 2
    source = discover(tmp_path / "sh")
    dataset = EvalDataset(source, source.samples, {"release": lambda img: __import__("torch").zeros(3, 2, 2,
                                                                                                     dtype=__import__("torch").uint8)})
    seen = []
    for rank in range(world):
        sampler = ShardSampler(len(dataset), rank, world)
        if not sampler.placeholder:
            seen += [dataset[i]["index"] for i in sampler]
    assert sorted(seen) == list(range(len(source.samples)))


def test_subset_is_chosen_from_labels_without_decoding_images(folders, tmp_path, monkeypatch):
    write_shards(folders[0], tmp_path / "sh", 3)
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda *a, **k: opened.append(1) or real_open(*a, **k))
    inputs = prepare_data(DataSpec(source=str(tmp_path / "sh"), subset=20), None, 1000)
    assert len(inputs.samples) == 20 and inputs.is_subset and not opened
    inputs.source.load_image(inputs.samples[0])
    assert opened == [1]  # the counter sees decodes


def _bad(tmp_path, name="bad.tar", members=(), raw=None):
    path = tmp_path / name
    if raw is not None:
        path.write_bytes(raw)
        return path
    with tarfile.open(path, "w") as tar:
        add_member(tar, "ok.jpg", b"\xff\xd8x")
        add_member(tar, "ok.cls", b"1")
        for name_, data, info in members:
            add_member(tar, name_, data, **info)
    return path


@pytest.mark.parametrize("case,message", [
    ("absolute", "member '/etc/evil.jpg' has an absolute or '..' name"),
    ("dotdot", "member '../evil.jpg' has an absolute or '..' name"),
    ("symlink", "member 'link.jpg' is a link"),
    ("huge", "member 'huge.jpg' is 4096 bytes, more than any image"),
    ("truncated", "truncated"),
    ("gzip", "not a readable uncompressed tar shard"),
])
def test_damaged_or_hostile_shards_are_bad_input_naming_shard_and_member(tmp_path, monkeypatch, case, message):
    monkeypatch.setattr(shards, "MAX_MEMBER_BYTES", 4000)
    if case == "absolute":
        path = _bad(tmp_path, members=[("/etc/evil.jpg", b"x", {})])
    elif case == "dotdot":
        path = _bad(tmp_path, members=[("../evil.jpg", b"x", {})])
    elif case == "symlink":
        path = _bad(tmp_path, members=[("link.jpg", b"", {"type": tarfile.SYMTYPE, "linkname": "/etc/passwd"})])
    elif case == "huge":
        path = _bad(tmp_path, members=[("huge.jpg", b"\0" * 4096, {}), ("huge.cls", b"1", {})])
    elif case == "truncated":
        good = _bad(tmp_path, "good.tar", members=[("big.jpg", os.urandom(3000), {}), ("big.cls", b"2", {})])
        path = _bad(tmp_path, raw=good.read_bytes()[:2500])
    else:
        import gzip
        path = _bad(tmp_path, raw=gzip.compress(_bad(tmp_path, "plain.tar").read_bytes()))
    with pytest.raises(BadInput) as exc:
        discover(path)
    assert str(path) in str(exc.value) and message in str(exc.value)


def test_hostile_shard_exits_2_and_extracts_nothing(tiny, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    path = _bad(work, members=[("../escaped.jpg", b"x", {}), ("../escaped.cls", b"1", {})])
    r = evaluate_cli("--model", tiny["hf"], "--config", tiny["yaml"], "--data", path, "--output", work / "out",
                     "--accelerator", "cpu", cwd=work)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "../escaped.jpg" in r.stderr and str(path) in r.stderr and "Traceback" not in r.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["bad.tar", "work"]


def _png(color=(1, 2, 3)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(out, format="PNG")
    return out.getvalue()


def _shard(path: Path, members) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            add_member(tar, name, data)
    return path


def _both_ways(source):
    """The samples as the loaded and the streamed reading give them (each a list, or the BadInput it raised)."""
    out = []
    for streaming in [False, True]:  # both readings (a loop, not an assertion)
        try:
            out.append([(s.image_id, s.label) for s in prepare_data(DataSpec(source=str(source), streaming=streaming),
                                                                     None, 1000).samples])
        except BadInput as exc:
            out.append(exc)
    return out


@pytest.mark.parametrize("case", ["label-later", "image-later", "member-repeated", "other-shard"])
def test_a_key_used_twice_is_bad_input_both_ways(tmp_path, case):
    """WebDataset's sample is a run of members sharing a key: a key that comes back (later in the shard, in
    another shard, or as a repeated member) is refused, not read as the first image with a later label."""
    a, b = [("a.png", _png()), ("a.cls", b"1")], [("b.png", _png((9, 9, 9))), ("b.cls", b"2")]
    again = {"label-later": [("a.cls", b"3")], "image-later": [("a.png", _png()), ("a.cls", b"3")],
             "member-repeated": [], "other-shard": []}[case]
    first = _shard(tmp_path / "val-0.tar", (a + [("a.cls", b"3")] if case == "member-repeated" else a) + b + again)
    if case == "other-shard":
        _shard(tmp_path / "val-1.tar", [("a.jpg", _png()), ("a.cls", b"3")])
    for result in _both_ways(tmp_path):
        assert isinstance(result, BadInput), result
        assert str(first) in str(result) and "key 'a'" in str(result) and "once" in str(result), result


def test_double_underscore_members_are_read_alike_loaded_and_streamed(tmp_path):
    """``__``-names are hidden files to ``datasets`` (its streaming reader skips them): the loaded reading skips
    them too; a ``__``-field (``a.__key__``) would overwrite the stream's own ``__key__``, so it is refused."""
    _shard(tmp_path / "val-0.tar", [("__meta__.json", b"{}"), ("a.png", _png()), ("a.cls", b"1"),
                                    ("n01/__x.png", _png()), ("n01/__x.cls", b"4"), ("b.png", _png((5, 5, 5))),
                                    ("b.cls", b"2")])
    loaded, streamed = _both_ways(tmp_path)
    assert loaded == streamed == [("a.png", 1), ("b.png", 2)]
    inputs = prepare_data(DataSpec(source=str(tmp_path), streaming=True), None, 1000)
    assert [inputs.source.load_image(s).getpixel((0, 0)) for s in inputs.samples] == [(1, 2, 3), (5, 5, 5)]
    _shard(tmp_path / "val-0.tar", [("a.png", _png()), ("a.cls", b"1"), ("a.__key__", b"b")])
    for result in _both_ways(tmp_path):
        assert isinstance(result, BadInput) and "a.__key__" in str(result), result
