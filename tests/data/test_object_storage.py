"""Shards in object storage: an S3-compatible server (moto's, on 127.0.0.1) serves web shards, a curated corpus and
WebPerson Parquet; curation, the readers and the training stream read them as they read local folders."""

import io
import shutil
import tarfile
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from _stream_corpus import jpeg, write_corpus
from moto.server import ThreadedMotoServer
from torch.utils.data import DataLoader

from gadms.config import AugmentConfig, StreamConfig, load_params
from gadms.curation.run import curate
from gadms.data.curated import curated_shards, iter_curated
from gadms.data.pipeline import image_transform
from gadms.data.samples import StreamTally
from gadms.data.shardplan import curated_index, steps_per_epoch, webperson_index
from gadms.data.streaming import StreamingPairs
from gadms.data.webperson import iter_webperson
from gadms.model.backbone import tokenizer
from gadms.synth.web import write_web_shards

REPO = Path(__file__).resolve().parents[2]
BUCKET = "gadms-shards"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on a free loopback port, the environment pointing at it, and a bucket."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
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
        client.create_bucket(Bucket=BUCKET)
        yield client
    server.stop()


def _upload(client, folder: Path, prefix: str) -> str:
    """Every file under ``folder`` to ``s3://BUCKET/prefix/...``; returns that URL."""
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        client.upload_file(str(path), BUCKET, f"{prefix}/{path.relative_to(folder).as_posix()}")
    return f"s3://{BUCKET}/{prefix}"


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_streamed_epoch_from_s3_is_the_local_one(s3, tmp_path):
    local = write_corpus(tmp_path / "curated", [7, 4, 9])
    url = _upload(s3, local, "curated")
    assert [str(p) for p in curated_shards(url)] == [f"{url}/0000{i}.tar" for i in range(3)]
    remote_index, local_index = curated_index(url), curated_index(local)
    assert [s.pairs for s in remote_index] == [s.pairs for s in local_index] == [14, 8, 18]

    def epoch(shards):
        stream = StreamingPairs(
            shards, image_transform(32, 16, AugmentConfig()), tokenizer(16), 3, StreamConfig(slots=2)
        )
        stream.plan(1, 0, 1, 4, steps_per_epoch(stream.total_pairs, 4))
        return list(DataLoader(stream, batch_size=None, num_workers=2))

    remote, here = epoch(remote_index), epoch(local_index)
    assert len(remote) == len(here) == 10
    for a, b in zip(remote, here):
        for x, y in zip(a[:4], b[:4]):
            assert torch.equal(x, y)  # images, tokens, identities, caption ids


def test_bad_remote_shards_are_counted_as_local_ones(s3, tmp_path):
    local = write_corpus(tmp_path / "curated", [5, 6])
    data = (local / "00001.tar").read_bytes()
    (local / "00001.tar").write_bytes(data[: len(data) // 2])  # cut off in the middle, as by a failed upload
    url = _upload(s3, local, "truncated")
    remote_tally, local_tally = StreamTally(), StreamTally()
    remote = [s.key for s in iter_curated(url, remote_tally)]
    here = [s.key for s in iter_curated(local, local_tally)]
    assert remote == here and 5 <= len(here) < 11
    assert remote_tally.skipped == local_tally.skipped
    assert [b.replace(url, "") for b in remote_tally.bad_shards] == [
        b.replace(str(local), "") for b in local_tally.bad_shards
    ]
    assert len(remote_tally.bad_shards) == 1 and remote_tally.bad_shards[0].startswith(f"{url}/00001.tar: ")


def test_webperson_parquet_from_s3(s3, tmp_path):
    folder = tmp_path / "webperson"
    folder.mkdir()
    rows = {
        "image": [{"bytes": jpeg(i), "path": f"{i}.jpg"} for i in range(6)],
        "caption1": [f"a {i}" for i in range(6)],
    }
    rows["caption2"] = [f"b {i}" if i != 2 else "" for i in range(6)]
    pq.write_table(pa.table(rows), folder / "part-0.parquet", row_group_size=2)
    url = _upload(s3, folder, "webperson")
    assert [s.pairs for s in webperson_index(url)] == [s.pairs for s in webperson_index(folder)] == [12]
    remote = [(s.key, s.captions) for s in iter_webperson(url)]
    assert remote == [(s.key, s.captions) for s in iter_webperson(folder)] and len(remote) == 6


def test_curation_reads_web_shards_from_s3_like_a_local_folder(s3, tmp_path):
    params = load_params(REPO / "params.yaml")
    web = tmp_path / "web"
    synth = params.synth.model_copy(update={"shard_size": 10})
    write_web_shards(web, scenes=20, seed=3, synth=synth, rules=params.curation.filter, progress=False)
    shutil.copy(web / "00000.tar", web / "00002.tar")
    with tarfile.open(web / "00002.tar", "a") as tar:  # a shard with one sample whose image is not an image
        info = tarfile.TarInfo("broken.jpg")
        info.size = 9
        tar.addfile(info, io.BytesIO(b"not a jpg"))
    url = _upload(s3, web, "web")
    from_s3 = curate(url, tmp_path / "from-s3", params, progress=False)
    from_disk = curate(web, tmp_path / "from-disk", params, progress=False)
    assert from_s3.summary().replace("from-s3", "out") == from_disk.summary().replace("from-disk", "out")
    assert [(r.failures, r.boxes, r.problems) for r in from_s3.shards] == [
        (r.failures, r.boxes, r.problems) for r in from_disk.shards
    ]
    remote_tree, local_tree = _tree(tmp_path / "from-s3"), _tree(tmp_path / "from-disk")
    shards = [name for name in local_tree if name.endswith(".tar") or name.endswith(".parquet")]
    assert len(shards) >= 6 and all(remote_tree[name] == local_tree[name] for name in shards)
    rerun = curate(url, tmp_path / "from-s3", params, progress=False)  # finished shards are known by their bytes
    assert all(r.skipped for r in rerun.shards)


@pytest.fixture
def web_server(tmp_path):
    """A plain web server on 127.0.0.1 (werkzeug): directory pages with links, files with HTTP range requests."""
    import html
    import threading

    from werkzeug.serving import make_server
    from werkzeug.utils import send_file
    from werkzeug.wrappers import Request, Response

    root = tmp_path / "site"
    root.mkdir()

    @Request.application
    def app(request):
        path = root / request.path.strip("/")
        if path.is_dir():
            links = "".join(
                f'<a href="{html.escape(p.name)}">{html.escape(p.name)}</a>\n' for p in sorted(path.iterdir())
            )
            return Response(f"<html><body>{links}</body></html>", mimetype="text/html")
        if path.is_file():
            return send_file(path, request.environ, conditional=True)  # answers Range with 206
        return Response("not found", status=404)

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_a_curated_corpus_served_over_http_streams_like_a_folder(web_server):
    root, base = web_server
    local = write_corpus(root / "curated", [3, 5])
    url = f"{base}/curated"
    assert [s.pairs for s in curated_index(url)] == [s.pairs for s in curated_index(local)] == [6, 10]
    assert [s.key for s in iter_curated(url)] == [s.key for s in iter_curated(local)]
