"""The streaming pre-training input: coverage across ranks and workers, seeding, bounded memory, bad samples, resume."""

import tracemalloc
from collections import Counter

import pytest
import torch
from _stream_corpus import write_corpus
from torch.utils.data import DataLoader

from gadms.config import AugmentConfig, StreamConfig
from gadms.data.curated import iter_curated
from gadms.data.pipeline import image_transform
from gadms.data.shardplan import curated_index, steps_per_epoch, webperson_index
from gadms.data.streaming import UNDECODABLE, StreamingPairs, tally_from_dict
from gadms.model.backbone import tokenizer
from gadms.problems import DataError

SIZES = [13, 7, 19, 11]  # uneven shards: 50 samples, 100 pairs


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("curated"), SIZES)


def _stream(root, seed=0, **config) -> StreamingPairs:
    cfg = StreamConfig(**{"slots": 2, "buffer_pairs": 16, **config})
    return StreamingPairs(curated_index(root), image_transform(32, 16, AugmentConfig()), tokenizer(16), seed, cfg)


def _epoch(stream, epoch, world, micro, workers=0, rank=None, start=0, states=None):
    """Every batch of the epoch for each rank: (images, tokens, identities, info)."""
    batches = steps_per_epoch(stream.total_pairs, micro * world)
    out = {}
    for r in range(world) if rank is None else [rank]:
        stream.plan(epoch, r, world, micro, batches, start, states)
        out[r] = list(DataLoader(stream, batch_size=None, num_workers=workers))
    return out


def _positions(batches) -> list[int]:
    return [p for b in batches for p in b[-1]["positions"].tolist()]


def test_sizes_come_from_the_manifests_before_reading(corpus):
    shards = curated_index(corpus)
    assert [s.pairs for s in shards] == [2 * n for n in SIZES]
    assert steps_per_epoch(100, 12) == 8 and steps_per_epoch(5, 12) == 1


def test_every_pair_is_seen_exactly_once_across_two_ranks_and_two_workers(corpus):
    stream = _stream(corpus)
    by_rank = _epoch(stream, 0, world=2, micro=5, workers=2)  # global batch 10 divides the 100 pairs
    assert len(by_rank[0]) == len(by_rank[1]) == 10  # the same number of steps on both ranks
    positions = _positions(by_rank[0]) + _positions(by_rank[1])
    assert sorted(positions) == list(range(100))
    images = Counter(i for r in by_rank.values() for b in r for i in b[2].tolist())
    assert len(images) == 50 and set(images.values()) == {2}  # every image with both of its captions


def test_the_remainder_of_an_epoch_is_the_tail_of_its_order(corpus):
    """Documented rule: floor(P / global batch) steps; the last P mod global batch positions wait for another epoch."""
    stream = _stream(corpus)
    by_rank = _epoch(stream, 0, world=2, micro=4)  # global 8: 12 steps, 96 pairs
    positions = _positions(by_rank[0]) + _positions(by_rank[1])
    assert sorted(positions) == list(range(96))


def test_same_seed_same_batches_and_the_workers_do_not_change_them(corpus):
    a = _epoch(_stream(corpus), 1, world=1, micro=6, workers=0)[0]
    b = _epoch(_stream(corpus), 1, world=1, micro=6, workers=2)[0]
    assert len(a) == len(b) == 16
    for x, y in zip(a, b):
        assert torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) and torch.equal(x[2], y[2])


def test_another_epoch_or_seed_gives_another_order(corpus):
    base = _positions(_epoch(_stream(corpus), 0, world=1, micro=10)[0])
    other_epoch = _positions(_epoch(_stream(corpus), 1, world=1, micro=10)[0])
    other_seed = _positions(_epoch(_stream(corpus, seed=1), 0, world=1, micro=10)[0])
    assert sorted(base) == sorted(other_epoch) == list(range(100))
    assert base != other_epoch and base != other_seed


def test_bigger_buffer_mixes_further(corpus):
    """buffer_pairs does what it says: with 2 slots of 2 pairs the order hardly moves, with 2 x 50 it does."""
    small = _positions(_epoch(_stream(corpus, slots=1, buffer_pairs=2), 0, world=1, micro=10)[0])
    large = _positions(_epoch(_stream(corpus, slots=1, buffer_pairs=100), 0, world=1, micro=10)[0])
    assert max(abs(p - i) for i, p in enumerate(small)) <= 1
    assert max(abs(p - i) for i, p in enumerate(large)) > 20


def test_memory_is_bounded_by_the_buffer_not_the_corpus(tmp_path):
    root = write_corpus(tmp_path, [40] * 6, size=(96, 192), noise=True)
    corpus_bytes = sum(len(s.image) for s in iter_curated(root))
    tracemalloc.start()
    held = list(iter_curated(root))  # what a loader holding the corpus needs
    holding = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    del held
    stream = _stream(root, slots=2, buffer_mb=corpus_bytes / 10 / 2**20)
    stream.plan(1, 0, 1, 8, 1)
    next(iter(stream))  # imports and caches of the first batch are not the buffer
    stream.plan(0, 0, 1, 8, 60)
    tracemalloc.start()
    peaks = [info["peak_bytes"] for *_, info in stream]  # batches are dropped as they come, as training does
    streaming = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(peaks) == 60
    assert 0 < max(peaks) <= corpus_bytes / 10 + 2 * 40_000  # the buffer's bound (+ the last crop of each slot's block)
    assert holding > corpus_bytes and streaming < corpus_bytes / 3, (holding, streaming, corpus_bytes)


def test_bad_samples_are_skipped_counted_once_and_steps_stay_equal(tmp_path):
    corrupt = {"0000000003.jpg": b"not a jpeg", "0000100015.json": b"{broken"}
    root = write_corpus(tmp_path, [10, 10], corrupt=corrupt)
    stream = _stream(root, slots=2)
    by_rank = _epoch(stream, 0, world=2, micro=4, workers=2)  # 5 steps, 4 slots, the shards shared between slots
    assert len(by_rank[0]) == len(by_rank[1]) == 5
    finals = {}
    for rank, batches in by_rank.items():
        for b in batches:
            finals[(rank, b[-1]["slot"])] = tally_from_dict(b[-1]["state"]["tally"])
    skipped = sum((t.skipped for t in finals.values()), Counter())
    assert skipped == Counter({UNDECODABLE: 2, "samples with malformed json": 1})
    assert all(b[0].shape[0] == 4 for r in by_rank.values() for b in r)


def test_a_stream_resumed_mid_epoch_makes_the_same_batches(corpus):
    stream = _stream(corpus)
    straight = _epoch(stream, 2, world=1, micro=6, workers=2)[0]
    k = 7
    states = {}
    for b in straight[:k]:
        states[b[-1]["slot"]] = b[-1]["state"]
    resumed = _epoch(_stream(corpus), 2, world=1, micro=6, workers=2, start=k, states=states)[0]
    assert len(resumed) == len(straight) - k
    for x, y in zip(straight[k:], resumed):
        assert torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) and x[-1]["state"] == y[-1]["state"]


def test_workers_must_divide_the_slots(corpus):
    with pytest.raises(DataError, match=r"train.num_workers \(2\) must divide train.stream.slots \(3\)"):
        _epoch(_stream(corpus, slots=3), 0, world=1, micro=4, workers=2)


def test_webperson_sizes_come_from_parquet_footers(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from _stream_corpus import jpeg

    rows = [
        {"image": {"bytes": jpeg(i), "path": f"{i}.jpg"}, "caption1": f"a {i}", "caption2": "" if i == 2 else f"b {i}"}
        for i in range(6)
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "part-0.parquet", row_group_size=4)
    shards = webperson_index(tmp_path)
    assert [s.pairs for s in shards] == [12]
    stream = StreamingPairs(shards, image_transform(32, 16), tokenizer(16), 0, StreamConfig(slots=1))
    batches = _epoch(stream, 0, world=1, micro=3)[0]
    assert len(batches) == 4  # 12 nominal pairs / 3; the empty caption is made up for by re-reading (pass 1)
    skipped = tally_from_dict(batches[-1][-1]["state"]["tally"]).skipped
    assert skipped == Counter({"empty captions dropped": 1})


def _captions_by_id(by_rank) -> dict[int, str]:
    """caption id -> the caption text (decoded from its tokens) over every batch of an epoch."""
    tok = tokenizer(16)
    out = {}
    for batches in by_rank.values():
        for b in batches:
            for cid, row in zip(b[3].tolist(), b[1]):
                out[cid] = tok.decode(row.tolist()) if hasattr(tok, "decode") else tuple(row.tolist())
    return out


def test_caption_ids_are_stable_across_epochs_and_cover_the_corpus(corpus):
    stream = _stream(corpus)
    first = _captions_by_id(_epoch(stream, 0, world=2, micro=5))
    second = _captions_by_id(_epoch(stream, 1, world=2, micro=5))
    assert sorted(first) == list(range(100))  # dense ids, one per caption of the corpus
    assert first == second  # the order changed, the id of each caption did not
    assert _positions(_epoch(stream, 0, world=1, micro=10)[0]) != _positions(_epoch(stream, 1, world=1, micro=10)[0])


def test_partners_are_the_other_caption_of_the_same_image(corpus):
    cfg = StreamConfig(slots=2, buffer_pairs=16)
    plain = StreamingPairs(curated_index(corpus), image_transform(32, 16, AugmentConfig()), tokenizer(16), 0, cfg)
    with_tic = StreamingPairs(
        curated_index(corpus), image_transform(32, 16, AugmentConfig()), tokenizer(16), 0, cfg, partners=True
    )
    assert len(_epoch(plain, 0, 1, 10)[0][0]) == 5  # images, tokens, identities, caption ids, info
    batches = _epoch(with_tic, 0, 1, 10)[0]
    assert len(batches[0]) == 6  # ... and the partner tokens before info
    tokens = {cid: row for b in batches for cid, row in zip(b[3].tolist(), b[1])}
    image_of = {cid: image for b in batches for cid, image in zip(b[3].tolist(), b[2].tolist())}
    for b in batches:
        for cid, partner in zip(b[3].tolist(), b[4]):
            (other,) = [c for c, image in image_of.items() if image == image_of[cid] and c != cid]
            assert torch.equal(partner, tokens[other])  # the image's other caption, not its own
    by_caption = StreamingPairs(
        curated_index(corpus), image_transform(32, 16, AugmentConfig()), tokenizer(16), 0, cfg, identity="caption"
    )
    ids = [i for b in _epoch(by_caption, 0, 1, 10)[0] for i in b[2].tolist()]
    assert len(set(ids)) == 100  # train.identity: caption gives every caption its own identity


def test_a_corpus_without_meta_files_is_counted_by_reading_it(tmp_path, corpus):
    import shutil

    bare = tmp_path / "bare"
    bare.mkdir()
    for tar in sorted(corpus.glob("*.tar")):
        shutil.copy(tar, bare / tar.name)
    assert [s.pairs for s in curated_index(bare)] == [s.pairs for s in curated_index(corpus)] == [2 * n for n in SIZES]
