"""Fetch a corpus version from a DVC remote named on the command line, changing no tracked file.

``gadms data checkout --hash H --remote URL`` and ``gadms data pull --remote URL`` on a machine whose
checked-in ``.dvc/config`` names a remote it cannot reach (a folder of another machine, the project's
default ``.dvc-storage``): the remote is added, for the one command, under :data:`ONE_OFF_REMOTE` to
``.dvc/config.local`` (git-ignored by ``dvc init``), and ``config.local`` is put back as it was
afterwards, byte for byte (or removed when there was none), whatever happens. ``.dvc/config`` is not
touched, and ``data.dvc`` is put back byte for byte too: a checkout of another version than it records
leaves the corpus folder holding that version while ``data.dvc`` still names the committed one (``gadms
data checkout --hash H`` without ``--remote`` records it: the version is in the local cache by then).
Every file is checked against its recorded md5 as a checkout from the default remote is.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gadms.versioning.commands import VersioningError, dvc
from gadms.versioning.dvc import DataVersion, checkout_hash, pull

ONE_OFF_REMOTE = "command-line"
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def checkout_from(root: Path, data_dir: Path, md5: str, url: str, force: bool = False) -> DataVersion:
    """Bring back the corpus whose DVC directory hash is ``md5``, fetching what the cache lacks from ``url``.

    Args:
        root: the DVC repository root (a git clone whose ``.dvc/`` is checked in).
        data_dir: the corpus directory, absolute or relative to ``root``.
        md5: the directory hash, with or without ``.dir``.
        url: any DVC remote: a local folder (absolute, or relative to the working directory) or a URL.
        force: see :func:`~gadms.versioning.dvc.checkout_hash`.

    Returns:
        The version now in ``data_dir``, every file checked against its md5; the ``.dvc`` file is unchanged.

    Raises:
        VersioningError: one line naming the remote when it is missing or unreachable or lacks the version.
    """
    with one_off_remote(root, url) as name:
        return checkout_hash(root, data_dir, md5, name, force=force, record=False)


def pull_from(root: Path, data_dir: Path, url: str) -> DataVersion:
    """Download and check out the version ``data_dir``'s ``.dvc`` file records, from ``url``.

    Args:
        root: the DVC repository root.
        data_dir: the corpus directory, absolute or relative to ``root``.
        url: any DVC remote (see :func:`checkout_from`).

    Returns:
        The version now in ``data_dir``, every file checked against its md5.
    """
    with one_off_remote(root, url) as name:
        return pull(root, data_dir, name)


@contextmanager
def one_off_remote(root: Path, url: str) -> Iterator[str]:
    """``url`` as a DVC remote of ``root`` in ``.dvc/config.local`` for the ``with`` block; yields its name.

    Errors inside the block that do not name the remote's location get it in front (``--remote URL: ...``).

    Raises:
        VersioningError: ``root`` is no DVC repository, a local folder ``url`` does not exist, or DVC
            refuses the URL.
    """
    root = Path(root).expanduser().resolve()
    if not (root / ".dvc").is_dir():
        raise VersioningError(
            f"{root} is not a DVC repository (no .dvc folder): clone the project's git repository, which holds "
            ".dvc/config, and run the command there"
        )
    target = remote_target(url)
    local = root / ".dvc" / "config.local"
    before = local.read_bytes() if local.is_file() else None
    try:
        dvc(root, "remote", "add", "--local", "--force", ONE_OFF_REMOTE, target)
        yield ONE_OFF_REMOTE
    except VersioningError as exc:
        if target in str(exc) or url in str(exc):
            raise
        raise VersioningError(f"--remote {url}: {exc}") from None
    finally:
        if before is None:
            local.unlink(missing_ok=True)
        else:
            local.write_bytes(before)


def remote_target(url: str) -> str:
    """What to hand DVC for ``url``: a URL as it is, a local folder as an absolute path that must exist.

    Raises:
        VersioningError: a local folder that does not exist (a typo must not read as "version not found").
    """
    if _URL.match(url):
        return url
    folder = Path(url).expanduser().absolute()
    if not folder.is_dir():
        raise VersioningError(f"--remote {url}: no such folder ({folder}); give a DVC remote folder or URL")
    return str(folder)
