"""Every image exactly once: each rank reads one contiguous block of the images (a cache serves it as one slice
per batch), the blocks are balanced to within one image, and a rank without images still takes part."""

from __future__ import annotations

import pytest

from evaluate.validation.data_module import ShardSampler


@pytest.mark.parametrize("length,world", [(24, 2), (7, 2), (10, 3), (3, 8), (1, 2), (100, 7), (0, 3)])
def test_contiguous_balanced_shards_cover_every_image_once(length, world):
    shards = [ShardSampler(length, rank, world) for rank in range(world)]
    blocks = [list(s) for s in shards if not s.placeholder and len(s)]
    assert [i for b in blocks for i in b] == list(range(length))  # once each, in order, rank by rank
    for b in blocks:
        assert b == list(range(b[0], b[0] + len(b)))  # contiguous
    sizes = [0 if s.placeholder else len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == length
    assert sizes == sorted(sizes, reverse=True)  # the first ranks hold the extra images
    for s in shards:  # fewer images than ranks: the others read one placeholder (index 0) they ignore
        assert s.placeholder == (length > 0 and len(s.indices) == 1 and s.indices == [0] and
                                 sizes[shards.index(s)] == 0)
        assert len(s) == len(list(s)) >= (1 if length else 0)


def test_seven_images_on_two_ranks():
    assert [list(ShardSampler(7, r, 2)) for r in range(2)] == [[0, 1, 2, 3], [4, 5, 6]]
    assert [list(ShardSampler(1, r, 2)) for r in range(2)] == [[0], [0]]
    assert [ShardSampler(1, r, 2).placeholder for r in range(2)] == [False, True]


def test_a_stopped_rank_reads_no_further():
    import threading

    stop = threading.Event()
    seen = []
    for i in ShardSampler(10, 1, 2, stop=stop):
        seen.append(i)
        stop.set()
    assert seen == [5]
