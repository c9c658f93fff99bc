"""Curation fanned out over a Dask cluster: each source shard is one plain Dask task running :func:`curate_shard`.

The workers run library code only. Nothing they run talks to Prefect, so no
worker starts a Prefect server of its own (which Prefect's client does in any
process without ``PREFECT_API_URL``) and no worker needs to reach one. The
client process holds ``OUT``'s lock, hands out the shards and finalizes.

Every worker must see the input and ``OUT`` under the same names as the client
(a shared filesystem; the input may be an ``s3://`` URL) and run the same
Python environment. Local paths are made absolute before they are sent, since
workers do not share the client's working directory.
"""

from __future__ import annotations

import dataclasses
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

from tqdm import tqdm

from gadms.config import Params
from gadms.curation.output import CurationError, open_output
from gadms.curation.records import SourceShard
from gadms.curation.report import CurationReport, ShardReport
from gadms.curation.run import curate_shard, finalize_curation
from gadms.curation.sources import list_source_shards
from gadms.storage import Location, is_url, location

if TYPE_CHECKING:
    from distributed import Client, Future


@contextmanager
def dask_client(address: str | None, workers: int) -> Iterator["Client"]:
    """A client of the scheduler at ``address``, or of a local cluster of ``workers`` processes; closed on exit.

    Args:
        address: the scheduler (``tcp://host:8786``); ``None`` starts a local cluster on 127.0.0.1.
        workers: processes of the local cluster (one thread each, like the flow's).

    Yields:
        The connected client.

    Raises:
        CurationError: the scheduler cannot be reached.
    """
    from distributed import Client, LocalCluster

    if address is None:
        options = {"n_workers": workers, "threads_per_worker": 1, "processes": True, "dashboard_address": None}
        with LocalCluster(host="127.0.0.1", **options) as cluster, Client(cluster, set_as_default=False) as client:
            yield client
        return
    from distributed.comm import resolve_address

    try:
        resolve_address(address)  # a malformed address fails here, before a half-built client would complain
        client = Client(address, set_as_default=False)
    except (OSError, ValueError, TypeError) as err:
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CurationError(f"cannot reach the Dask scheduler at {address} ({detail})") from None
    with client:
        yield client


def submit_shards(client: "Client", shards: Sequence[SourceShard], out: Path, params: Params) -> list["Future"]:
    """Send each shard to the cluster as a plain task (no Prefect on the workers).

    Args:
        client: the cluster's client.
        shards: the source shards.
        out: the curated output directory (every worker sees it at this path).
        params: all parameters; captioning over a VLM endpoint is retried ``orchestration.retries`` times.

    Returns:
        One future per shard, each giving the shard's :class:`ShardReport`.
    """
    retries = params.orchestration.retries if params.curation.captioning.backend == "vlm" else 0
    target = Path(out).absolute()
    run = uuid.uuid4().hex[:8]  # keys are unique per run (the dashboard shows them); nothing written depends on them
    return [
        client.submit(curate_shard, _absolute(s), target, params, key=f"curate-shard-{s.name}-{run}", retries=retries)
        for s in shards
    ]


def _absolute(shard: SourceShard) -> SourceShard:
    """``shard`` with a local path made absolute (workers run in other directories)."""
    if is_url(shard.path):
        return shard
    return dataclasses.replace(shard, path=Path(str(shard.path)).absolute())


def finished_reports(
    futures: Sequence["Future"], on_shard: Callable[[ShardReport], None] | None = None
) -> list[ShardReport]:
    """The shards' reports as they finish; when a shard fails, its error is raised once every shard has ended.

    Waiting for the others keeps ``OUT`` locked while any worker may still write
    to it, and their finished shards are skipped by the rerun.

    Args:
        futures: from :func:`submit_shards`.
        on_shard: called with each report as it arrives.

    Returns:
        The reports, in the order the shards finished.
    """
    from distributed import as_completed

    reports: list[ShardReport] = []
    failure: BaseException | None = None
    if not futures:
        return reports
    for future in as_completed(futures, loop=futures[0].client.loop):  # the futures' client, not a default one
        error = future.exception()
        if error is not None:
            failure = failure or error
            continue
        report = future.result()
        reports.append(report)
        if on_shard is not None:
            on_shard(report)
    if failure is not None:
        raise failure
    return reports


def curate_on_dask(
    input_dir: Path | str | Location,
    out: Path,
    params: Params,
    progress: bool = True,
    on_shard: Callable[[ShardReport], None] | None = None,
) -> CurationReport:
    """Curate every source shard of ``input_dir`` into ``out`` on Dask: the same bytes as :func:`curate`.

    Args:
        input_dir: web shards, local (on a filesystem every worker shares) or a URL.
        out: the curated output directory, on a filesystem every worker shares.
        params: all parameters; ``orchestration.dask_address`` names the scheduler (``None``: a local cluster of
            ``orchestration.max_workers`` processes).
        progress: show a progress bar over the shards.
        on_shard: called with each shard's report as it finishes.

    Returns:
        The run's report.

    Raises:
        CurationError: ``out`` is unsafe for this input, another run is writing to it, or the scheduler is unreachable.
    """
    source = params.curation.source
    shards = list_source_shards(location(input_dir), source.format, source.folder_shard_size)
    cfg = params.orchestration
    with open_output(location(input_dir), Path(out), shards), dask_client(cfg.dask_address, cfg.max_workers) as client:
        bar = tqdm(total=len(shards), desc="curate", unit="shard", disable=not progress)

        def finished(report: ShardReport) -> None:
            bar.update(1)
            if on_shard is not None:
                on_shard(report)

        reports = finished_reports(submit_shards(client, shards, Path(out), params), finished)
        bar.close()
        return finalize_curation(Path(out), reports, params)
