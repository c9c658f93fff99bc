"""The corpus index: one file read at start-up instead of one footer per shard, checked against one listing."""

import logging
import os
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from _stream_corpus import jpeg, write_corpus
from typer.testing import CliRunner

import gadms.data.corpus_index as corpus_index
from gadms.cli import app
from gadms.config import StreamConfig
from gadms.data.corpus_index import (
    INDEX_NAME,
    CorpusIndexEntry,
    build_corpus_index,
    curated_index_entry,
    read_corpus_index,
    write_corpus_index,
)
from gadms.data.pipeline import image_transform
from gadms.data.shardplan import curated_index, steps_per_epoch, webperson_index
from gadms.data.streaming import StreamingPairs
from gadms.model.backbone import tokenizer
from gadms.problems import DataError

SIZES = [7, 4, 9, 3]


@pytest.fixture
def corpus(tmp_path):
    return write_corpus(tmp_path / "curated", SIZES)


def _webperson(folder, rows_per_file, group=4):
    """Parquet shards ``part-I.parquet`` (one nested in ``more/``) with ``group`` rows per row group."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i, rows in enumerate(rows_per_file):
        name = f"more/part-{i}.parquet" if i == len(rows_per_file) - 1 else f"part-{i}.parquet"
        (folder / name).parent.mkdir(exist_ok=True)
        table = pa.table(
            {
                "image": [{"bytes": jpeg(100 * i + r), "path": f"{i}-{r}.jpg"} for r in range(rows)],
                "caption1": [f"a {i} {r}" for r in range(rows)],
                "caption2": [f"b {i} {r}" for r in range(rows)],
            }
        )
        pq.write_table(table, folder / name, row_group_size=group)
        names.append(name)
    return names


def _footerless(monkeypatch):
    """Reading any shard or meta footer fails: what still works read the index."""

    def refuse(path):
        raise AssertionError(f"footer of {path} read")

    monkeypatch.setattr(corpus_index, "parquet_metadata", refuse)


def test_an_index_round_trips_and_its_bytes_do_not_depend_on_the_entry_order(tmp_path):
    entries = [
        CorpusIndexEntry("b/1.parquet", "webperson", 900, 12, (4, 2)),
        CorpusIndexEntry("a-c.parquet", "webperson", 100, 2, (1,)),
        CorpusIndexEntry("a/z.parquet", "webperson", 10, 0, ()),
    ]
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    write_corpus_index(tmp_path / "one", entries)
    write_corpus_index(tmp_path / "two", entries[::-1])
    first, second = (tmp_path / "one" / INDEX_NAME).read_bytes(), (tmp_path / "two" / INDEX_NAME).read_bytes()
    assert first == second
    back = read_corpus_index(tmp_path / "one")
    assert [e.name for e in back] == ["a/z.parquet", "a-c.parquet", "b/1.parquet"]  # path components, as Path sorts
    assert sorted(back, key=lambda e: e.name) == sorted(entries, key=lambda e: e.name)
    assert pq.read_table(tmp_path / "one" / INDEX_NAME).column("size").to_pylist() == [10, 100, 900]
    assert [p.name for p in (tmp_path / "one").iterdir()] == [INDEX_NAME]  # no temporary file left behind
    assert read_corpus_index(tmp_path) is None


@pytest.mark.parametrize(
    "entries, message",
    [
        ([CorpusIndexEntry("../x.tar", "curated", 1, 2)], "not a relative path"),
        ([CorpusIndexEntry("x.tar", "tar", 1, 2)], "kind 'tar' is not one of curated, webperson"),
        ([CorpusIndexEntry("x.tar", "curated", -1, 2)], "negative"),
        ([CorpusIndexEntry("x.parquet", "webperson", 5, 6, (2,))], "6 pairs but 2 rows"),
        ([CorpusIndexEntry("x.tar", "curated", 1, 2)] * 2, "listed twice"),
    ],
)
def test_malformed_entries_are_refused_in_one_line(tmp_path, entries, message):
    with pytest.raises(DataError, match=message):
        write_corpus_index(tmp_path, entries)
    assert not list(tmp_path.iterdir())


def test_a_file_that_is_not_an_index_is_a_one_line_error(tmp_path):
    pq.write_table(pa.table({"name": ["x.tar"]}), tmp_path / INDEX_NAME)
    with pytest.raises(DataError, match=r"_shards.parquet: not a gadms corpus index .*gadms data index") as err:
        read_corpus_index(tmp_path)
    assert "\n" not in str(err.value)
    (tmp_path / INDEX_NAME).write_bytes(b"garbage")
    with pytest.raises(DataError, match="not a gadms corpus index"):
        read_corpus_index(tmp_path)


def test_built_index_of_a_curated_corpus_matches_its_files_and_meta(corpus):
    entries = build_corpus_index(corpus)
    assert [e.name for e in entries] == [f"{i:05d}.tar" for i in range(len(SIZES))]
    for entry in entries:
        meta = pq.read_table(corpus / "meta" / entry.name.replace(".tar", ".parquet"))
        assert entry.pairs == sum(len(c) for c in meta.column("captions").to_pylist())
        assert entry.size == os.path.getsize(corpus / entry.name) and entry.kind == "curated" and not entry.row_groups
    assert read_corpus_index(corpus) == entries
    assert entries[0] == curated_index_entry(corpus / "00000.tar", 2 * SIZES[0])  # what curation writes


def test_training_reads_the_index_not_the_footers(corpus, monkeypatch):
    without = curated_index(corpus)
    build_corpus_index(corpus)
    _footerless(monkeypatch)
    assert curated_index(corpus) == without  # same shards, pair counts, numbering


def test_a_curated_epoch_is_the_same_with_and_without_the_index(corpus):
    def epoch():
        stream = StreamingPairs(curated_index(corpus), image_transform(32, 16), tokenizer(16), 3, StreamConfig(slots=2))
        stream.plan(1, 0, 1, 4, steps_per_epoch(stream.total_pairs, 4))
        return list(stream)

    before = epoch()
    build_corpus_index(corpus)
    after = epoch()
    assert len(before) == len(after) == sum(2 * n for n in SIZES) // 4
    for a, b in zip(before, after):
        assert all(torch.equal(x, y) for x, y in zip(a[:4], b[:4]))  # images, tokens, identities, caption ids
        assert torch.equal(a[4]["positions"], b[4]["positions"]) and a[4]["state"] == b[4]["state"]


@pytest.mark.parametrize("change", ["rewritten", "added", "removed"])
def test_a_stale_index_warns_once_and_falls_back_to_the_footers(corpus, caplog, change):
    build_corpus_index(corpus)
    if change == "rewritten":
        write_corpus(corpus.parent / "other", [5])
        (corpus / "00002.tar").write_bytes((corpus.parent / "other" / "00000.tar").read_bytes())
        (corpus / "meta" / "00002.parquet").write_bytes((corpus.parent / "other/meta/00000.parquet").read_bytes())
        expected, pairs = "00002.tar", [14, 8, 10, 6]
    elif change == "added":
        write_corpus(corpus.parent / "other", [5])
        (corpus / "00009.tar").write_bytes((corpus.parent / "other" / "00000.tar").read_bytes())
        (corpus / "meta" / "00009.parquet").write_bytes((corpus.parent / "other/meta/00000.parquet").read_bytes())
        expected, pairs = "00009.tar", [14, 8, 18, 6, 10]
    else:
        (corpus / "00001.tar").unlink()
        expected, pairs = "00001.tar", [14, 18, 6]
    with caplog.at_level(logging.WARNING, logger="gadms.data.corpus_index"):
        shards = curated_index(corpus)
    stale = [r.getMessage() for r in caplog.records if "is stale" in r.getMessage()]
    assert len(stale) == 1 and f"({expected}:" in stale[0] and "gadms data index" in stale[0]
    assert [s.pairs for s in shards] == pairs


def test_without_an_index_the_footers_are_read_concurrently_in_list_order(tmp_path, monkeypatch):
    sizes = list(range(1, 41))
    corpus = write_corpus(tmp_path / "many", sizes, captions=1)
    active, peak, lock = [0], [0], threading.Lock()
    real = corpus_index.parquet_metadata

    def slow(path):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.02)
        with lock:
            active[0] -= 1
        return real(path)

    monkeypatch.setattr(corpus_index, "parquet_metadata", slow)
    shards = curated_index(corpus)
    assert [s.pairs for s in shards] == sizes and [s.path.name for s in shards] == [f"{i:05d}.tar" for i in range(40)]
    assert 1 < peak[0] <= corpus_index.FOOTER_THREADS


def test_webperson_index_with_nested_shards(tmp_path, monkeypatch):
    root = tmp_path / "webperson"
    names = _webperson(root, [10, 3, 6])
    without = webperson_index(root)
    assert [s.pairs for s in webperson_index(root / "part-1.parquet")] == [6]  # one shard: its footer
    entries = build_corpus_index(root)
    assert [e.name for e in entries] == ["more/part-2.parquet", "part-0.parquet", "part-1.parquet"]
    assert [(e.pairs, e.row_groups) for e in entries] == [(12, (4, 2)), (20, (4, 4, 2)), (6, (3,))]
    assert sorted(names) != names  # the nested one sorts first, as pathlib orders the paths
    _footerless(monkeypatch)
    assert webperson_index(root) == without
    assert [s.path.relative_to(root).as_posix() for s in without] == [e.name for e in entries]


def test_the_index_is_not_taken_for_a_webperson_shard(tmp_path):
    from gadms.data.webperson import iter_webperson, parquet_files

    root = tmp_path / "webperson"
    _webperson(root, [5])
    build_corpus_index(root)
    assert [p.name for p in parquet_files(root)] == ["part-0.parquet"]
    assert len(list(iter_webperson(root))) == 5


def test_gadms_data_index_writes_the_index(corpus, tmp_path):
    result = CliRunner().invoke(app, ["data", "index", str(corpus)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"wrote {corpus}/{INDEX_NAME}: 4 curated shards, 46 pairs"
    assert [e.pairs for e in read_corpus_index(corpus)] == [2 * n for n in SIZES]
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(app, ["data", "index", str(tmp_path / "empty")])
    assert result.exit_code == 2 and result.output.startswith("error: no *.parquet shards under")
    assert len(result.output.strip().splitlines()) == 1
    help_text = CliRunner().invoke(app, ["data", "index", "--help"], env={"COLUMNS": "200"}).output
    assert "_shards.parquet" in help_text and "stale" in help_text


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on a free loopback port, the environment pointing at it, and a bucket."""
    import boto3
    from moto.server import ThreadedMotoServer
    from s3fs import S3FileSystem

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    S3FileSystem.clear_instance_cache()  # filesystems are cached per options, not per endpoint: none for another server
    host, port = server.get_host_and_port()
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        client = boto3.client("s3")
        client.create_bucket(Bucket="index")
        yield client
    S3FileSystem.clear_instance_cache()
    server.stop()


def _upload(client, folder, prefix):
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        client.upload_file(str(path), "index", f"{prefix}/{path.relative_to(folder).as_posix()}")
    return f"s3://index/{prefix}"


def test_an_index_in_s3_is_written_read_and_checked_like_a_local_one(s3, corpus, monkeypatch, caplog):
    url = _upload(s3, corpus, "curated")
    entries = build_corpus_index(url)
    assert s3.head_object(Bucket="index", Key=f"curated/{INDEX_NAME}")["ContentLength"] > 0
    assert entries == build_corpus_index(corpus)
    assert (
        s3.get_object(Bucket="index", Key=f"curated/{INDEX_NAME}")["Body"].read() == (corpus / INDEX_NAME).read_bytes()
    )
    local = curated_index(corpus)
    with monkeypatch.context() as patch:
        _footerless(patch)
        remote = curated_index(url)
    assert [(s.path.name, s.pairs, s.first_pair) for s in remote] == [
        (s.path.name, s.pairs, s.first_pair) for s in local
    ]
    other = write_corpus(corpus.parent / "other", [30])  # sizes are compared: tars grow in 10 KiB records
    s3.upload_file(str(other / "00000.tar"), "index", "curated/00001.tar")
    s3.upload_file(str(other / "meta" / "00000.parquet"), "index", "curated/meta/00001.parquet")
    with caplog.at_level(logging.WARNING, logger="gadms.data.corpus_index"):
        shards = curated_index(url)
    stale = [r.getMessage() for r in caplog.records if "is stale" in r.getMessage()]
    assert len(stale) == 1 and stale[0].startswith(f"{url}/{INDEX_NAME} is stale (00001.tar: ")
    assert [s.pairs for s in shards] == [14, 60, 18, 6]


def test_a_webperson_index_in_s3(s3, tmp_path, monkeypatch):
    root = tmp_path / "webperson"
    _webperson(root, [10, 3, 6])
    url = _upload(s3, root, "webperson")
    assert build_corpus_index(url) == build_corpus_index(root)
    _footerless(monkeypatch)
    assert [(s.path.name, s.pairs) for s in webperson_index(url)] == [
        (s.path.name, s.pairs) for s in webperson_index(root)
    ]
