"""Version the curated corpus directory with DVC and bring any version back by its hash.

Every operation runs the ``dvc`` command line of the running interpreter
(``python -m dvc``) in the repository root, the interface DVC documents and
keeps stable; its output is captured and a failure becomes a one-line
:class:`VersioningError`. A version is named by DVC's directory hash (the
``md5`` of ``data.dvc`` without ``.dir``), so a model logged with that hash
leads back to the exact bytes it was trained on, from the local cache or the
remote. Only DVC 3 hashes (``hash: md5``) are handled.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import yaml

from gadms.versioning.commands import VersioningError
from gadms.versioning.commands import dvc as _dvc
from gadms.versioning.commands import git as _git
from gadms.versioning.commands import git_top_level as _git_top_level
from gadms.versioning.commands import run_dvc as _run_dvc
from gadms.versioning.verify import file_md5, read_manifest, verify_workspace

_HASH = re.compile(r"[0-9a-f]{32}")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True)
class DataVersion:
    """One version of the corpus directory, as its ``.dvc`` file records it.

    Attributes:
        md5: DVC's directory hash without the ``.dir`` suffix; :func:`checkout_hash` takes it back.
        path: the corpus directory relative to the repository root, e.g. ``data``.
        files: number of files in the directory.
        size: total size of those files in bytes.
    """

    md5: str
    path: Path
    files: int
    size: int


def ensure_repo(root: Path, remote_name: str, remote_url: str) -> None:
    """Make ``root`` a DVC repository with a default remote and analytics off; safe to call again.

    Args:
        root: a git work tree (its top level, or a folder inside one for a DVC ``--subdir`` repo).
        remote_name: name of the default remote, e.g. ``local``.
        remote_url: a DVC URL (``s3://``, ``gs://``, ``ssh://``, ...), written as is without
            contacting it, or a local folder; a relative folder is relative to ``root``, is
            created, and is git-ignored when it lies inside ``root``.

    Returns:
        None. ``dvc init`` stages ``.dvc/config``, ``.dvc/.gitignore`` and ``.dvcignore`` in git
        the first time; committing them is up to the caller.
    """
    root = _existing_dir(root)
    top_level = _git_top_level(root)
    if not (root / ".dvc").is_dir():
        _dvc(root, "init", *(["--subdir"] if top_level != root else []))
    _dvc(root, "config", "core.analytics", "false")
    _dvc(root, "remote", "add", "--default", "--force", remote_name, _remote_target(root, remote_url))


def track(root: Path, data_dir: Path) -> DataVersion:
    """Record the current contents of ``data_dir`` as a new version (``dvc add``).

    Args:
        root: the DVC repository root (see :func:`ensure_repo`).
        data_dir: the corpus directory, absolute or relative to ``root``; its ``.dvc`` file
            is written next to it (``root/data`` -> ``root/data.dvc``).

    Returns:
        The version now recorded in the ``.dvc`` file.
    """
    root, rel = _corpus_path(root, data_dir)
    if not (root / rel).is_dir():
        raise VersioningError(f"track: {root / rel} is not a directory")
    _dvc(root, "add", rel.as_posix())
    return _recorded_version(root, rel)


def current_version(root: Path, data_dir: Path) -> DataVersion | None:
    """The version the ``.dvc`` file of ``data_dir`` points at.

    Args:
        root: the DVC repository root.
        data_dir: the corpus directory, absolute or relative to ``root``.

    Returns:
        The recorded version, or None when ``data_dir`` has no ``.dvc`` file yet.
    """
    root, rel = _corpus_path(root, data_dir)
    if not _dvc_file(root, rel).is_file():
        return None
    return _recorded_version(root, rel)


def push(root: Path, remote: str | None = None) -> None:
    """Upload the cached data of every tracked version in the workspace to a remote (``dvc push``).

    Args:
        root: the DVC repository root.
        remote: remote name; None for the default remote.

    Returns:
        None.
    """
    root = _existing_dir(root)
    _dvc(root, "push", *_remote_option(remote))


def pull(root: Path, data_dir: Path, remote: str | None = None) -> DataVersion:
    """Download and check out the version the ``.dvc`` file of ``data_dir`` points at (``dvc pull``).

    Args:
        root: the DVC repository root, e.g. a fresh git clone.
        data_dir: the corpus directory, absolute or relative to ``root``.
        remote: remote name; None for the default remote.

    Returns:
        The version now in ``data_dir``, every file checked against its recorded md5 (:func:`verify_workspace`).
    """
    root, rel = _corpus_path(root, data_dir)
    dvc_file = _dvc_file(root, rel)
    if not dvc_file.is_file():
        raise VersioningError(f"pull: {dvc_file} not found; nothing is tracked for {root / rel}")
    version = _recorded_version(root, rel)
    objects = _object_dir(root)
    try:
        _dvc(root, "pull", *_remote_option(remote), _relative(root, dvc_file))
    except VersioningError:
        bad = _first_bad_remote_file(root, root / rel, remote, version.md5)
        if bad is None:
            raise
        raise VersioningError(f"{bad}; nothing was pulled") from None
    verify_workspace(root, rel, objects, version.md5)
    return version


def checkout_hash(
    root: Path, data_dir: Path, md5: str, remote: str | None = None, force: bool = False, record: bool = True
) -> DataVersion:
    """Bring back exactly the corpus whose DVC directory hash is ``md5`` and point the ``.dvc`` file at it.

    The data comes from the local cache, or from the remote when it is not cached.
    Afterwards ``data_dir`` holds exactly that version's files, byte for byte: files of
    other versions are removed, and every file is checked against its recorded md5
    (:func:`verify_workspace`). On any failure the ``.dvc`` file is left as it was.

    Args:
        root: the DVC repository root.
        data_dir: the corpus directory, absolute or relative to ``root``.
        md5: the directory hash, with or without the ``.dir`` suffix.
        remote: remote to fetch from when the version is not cached; None for the default remote.
        force: also delete files in ``data_dir`` that are not in the DVC cache; without it DVC
            refuses to delete them and nothing changes.
        record: point the ``.dvc`` file at ``md5`` (default); False puts it back byte for byte as it was
            (``data_dir`` then holds another version than it records when ``md5`` is not that one).

    Returns:
        The version now in ``data_dir``.
    """
    root, rel = _corpus_path(root, data_dir)
    md5 = _directory_hash(md5)
    dvc_file = _dvc_file(root, rel)
    previous = dvc_file.read_text(encoding="utf-8") if dvc_file.is_file() else None
    previous_bytes = dvc_file.read_bytes() if previous is not None else None
    dvc_file.write_text(_pointer_yaml(previous, rel.name, md5), encoding="utf-8")
    try:
        objects = _object_dir(root)
        manifest = _cached_manifest(objects, md5)
        if manifest is None:
            manifest = _fetch_manifest(root, objects, dvc_file, md5, remote)
        _dvc(root, "checkout", *(["--force"] if force else []), _relative(root, dvc_file))
        manifest = verify_workspace(root, rel, objects, md5)
    except BaseException:
        _restore_bytes(dvc_file, previous_bytes)
        raise
    version = DataVersion(
        md5, rel, len(manifest), sum((root / rel / entry["relpath"]).stat().st_size for entry in manifest)
    )
    if not record:
        _restore_bytes(dvc_file, previous_bytes)
    else:
        dvc_file.write_text(_pointer_yaml(previous, rel.name, md5, version), encoding="utf-8")
    return version


def describe(version: DataVersion) -> str:
    """One line for CLI output, e.g. ``data @ 61dc167cf4e403325b9d260b44d1af3f (1,204 files, 35.2 MiB)``.

    Args:
        version: a corpus version.

    Returns:
        The directory, the full hash (to pass to :func:`checkout_hash`), file count and size.
    """
    noun = "file" if version.files == 1 else "files"
    return f"{version.path.as_posix()} @ {version.md5} ({version.files:,} {noun}, {_human_size(version.size)})"


def _human_size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    value = size / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


# --- paths and remotes ---------------------------------------------------------------------------


def _existing_dir(root: Path) -> Path:
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise VersioningError(f"{root}: repository root is not a directory")
    return root


def _corpus_path(root: Path, data_dir: Path) -> tuple[Path, Path]:
    """The resolved root and ``data_dir`` relative to it; it must lie strictly inside the root."""
    root = _existing_dir(root)
    path = (root / Path(data_dir).expanduser()).resolve()
    if path == root or not path.is_relative_to(root):
        raise VersioningError(f"{path}: corpus directory must lie inside the repository {root}")
    return root, path.relative_to(root)


def _dvc_file(root: Path, rel: Path) -> Path:
    return root / rel.parent / f"{rel.name}.dvc"


def _relative(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def _remote_option(remote: str | None) -> list[str]:
    return ["--remote", remote] if remote else []


def _remote_target(root: Path, url: str) -> str:
    """What to hand ``dvc remote add``: URLs as they are, local folders created (and git-ignored)."""
    if _URL.match(url):
        return url
    folder = Path(url).expanduser()
    absolute = folder if folder.is_absolute() else root / folder
    absolute.mkdir(parents=True, exist_ok=True)
    _git_ignore(root, absolute.resolve())
    # run in root, DVC stores a relative folder relative to .dvc/, so it stays relative to root
    return str(folder) if folder.is_absolute() else url


def _git_ignore(root: Path, folder: Path) -> None:
    """Keep a local remote inside the work tree out of git (its blobs belong to DVC)."""
    if folder == root or not folder.is_relative_to(root):
        return
    rel = folder.relative_to(root).as_posix()
    if _git(root, "check-ignore", "--quiet", rel).returncode == 0:
        return
    gitignore = root / ".gitignore"
    text = gitignore.read_text(encoding="utf-8") if gitignore.is_file() else ""
    separator = "" if not text or text.endswith("\n") else "\n"
    gitignore.write_text(f"{text}{separator}/{rel}/\n", encoding="utf-8")


def _remote_location(root: Path, remote: str | None) -> tuple[str, str] | None:
    """(name, URL) of ``remote``, or of the default remote; None when no default is set.

    Asks ``dvc remote default`` and ``dvc config remote.NAME.url``, which prints local
    folders as absolute paths (``dvc remote list`` wraps long lines).
    """
    if remote is None:
        result = _run_dvc(root, "remote", "default")
        if result.returncode != 0:
            return None
        remote = result.stdout.strip()
    result = _run_dvc(root, "config", f"remote.{remote}.url")
    if result.returncode != 0:
        raise VersioningError(f"{root}: no DVC remote named {remote!r} is configured")
    return remote, result.stdout.strip()


# --- .dvc files and the cache --------------------------------------------------------------------


def _directory_hash(text: str) -> str:
    md5 = text.strip().lower().removesuffix(".dir")
    if not _HASH.fullmatch(md5):
        raise VersioningError(
            f"checkout: {text!r} is not a DVC directory hash (32 hex digits, optionally followed by .dir)"
        )
    return md5


def _recorded_version(root: Path, rel: Path) -> DataVersion:
    """The version a ``.dvc`` file records for ``rel``; one-line errors for files DVC did not write."""
    dvc_file = _dvc_file(root, rel)
    try:
        document = yaml.safe_load(dvc_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise VersioningError(f"{dvc_file}: cannot read ({type(exc).__name__})") from None
    out = _output_entry(document, rel.name)
    if out is None:
        raise VersioningError(f"{dvc_file}: no output with path {rel.name!r}")
    md5 = str(out.get("md5", ""))
    if not md5.endswith(".dir") or not _HASH.fullmatch(md5.removesuffix(".dir")):
        raise VersioningError(f"{dvc_file}: md5 {md5!r} is not a DVC directory hash (is {rel} a directory?)")
    if not isinstance(out.get("nfiles"), int) or not isinstance(out.get("size"), int):
        raise VersioningError(
            f"{dvc_file}: nfiles/size missing for {rel.name!r}; run `dvc commit {_relative(root, dvc_file)}`"
        )
    return DataVersion(md5.removesuffix(".dir"), rel, out["nfiles"], out["size"])


def _output_entry(document: Any, name: str) -> dict[str, Any] | None:
    outs = document.get("outs") if isinstance(document, dict) else None
    if not isinstance(outs, list):
        return None
    return next((out for out in outs if isinstance(out, dict) and out.get("path") == name), None)


def _pointer_yaml(previous: str | None, name: str, md5: str, version: DataVersion | None = None) -> str:
    """The ``.dvc`` file text pointing ``name`` at ``md5``, keeping any other keys of the previous file."""
    try:
        document = yaml.safe_load(previous) if previous else None
    except yaml.YAMLError:
        document = None
    document = document if isinstance(document, dict) else {}
    old = _output_entry(document, name) or {}
    out: dict[str, Any] = {"md5": f"{md5}.dir"}
    if version is not None:
        out.update(size=version.size, nfiles=version.files)
    out.update(hash="md5", path=name)
    out.update({key: value for key, value in old.items() if key not in {"md5", "size", "nfiles", "hash", "path"}})
    outs = document["outs"] if isinstance(document.get("outs"), list) else []
    document["outs"] = [out, *(entry for entry in outs if entry is not old)]
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False)


def _restore_bytes(dvc_file: Path, previous: bytes | None) -> None:
    if previous is None:
        dvc_file.unlink(missing_ok=True)
    else:
        dvc_file.write_bytes(previous)


def _object_dir(root: Path) -> Path:
    """Where the local cache keeps DVC 3 objects (``<cache>/files/md5``)."""
    return Path(_dvc(root, "cache", "dir").strip()) / "files" / "md5"


def _cached_manifest(objects: Path, md5: str) -> list[dict[str, str]] | None:
    """The file list of directory ``md5`` when it and every file of it are in the local cache."""
    listing = objects / md5[:2] / f"{md5[2:]}.dir"
    if not listing.is_file():
        return None
    try:
        manifest = json.loads(listing.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not _all_cached(objects, manifest):
        return None
    return manifest


def _first_bad_remote_file(root: Path, folder: Path, remote: str | None, md5: str) -> str | None:
    """For a remote that is a local folder: ``"FILE: why"`` for the first file of version ``md5`` (checked out
    into ``folder``) whose object there is missing or has other bytes; None when all are good or the remote is
    not a folder.
    """
    location = _remote_location(root, remote)
    if location is None or _URL.match(location[1]):
        return None
    objects = Path(location[1]) / "files" / "md5"
    listing = objects / md5[:2] / f"{md5[2:]}.dir"
    if not listing.is_file() or file_md5(listing) != md5:
        return f"{listing}: the file list of version {md5} in remote '{location[0]}' is missing or corrupt"
    for entry in read_manifest(listing):
        stored = objects / entry["md5"][:2] / entry["md5"][2:]
        actual = file_md5(stored) if stored.is_file() else "missing"
        if actual != entry["md5"]:
            return (
                f"{folder / entry['relpath']}: its object {stored} in remote '{location[0]}' has md5 {actual}, "
                f"not {entry['md5']}"
            )
    return None


def _all_cached(objects: Path, manifest: Sequence[Any]) -> bool:
    for entry in manifest:
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("md5"), str)
            or not isinstance(entry.get("relpath"), str)
        ):
            return False
        if not (objects / entry["md5"][:2] / entry["md5"][2:]).is_file():
            return False
    return True


def _fetch_manifest(root: Path, objects: Path, dvc_file: Path, md5: str, remote: str | None) -> list[dict[str, str]]:
    """Fetch the version ``dvc_file`` points at from the remote; its file list, or the 'no corpus' error."""
    location = _remote_location(root, remote)
    if location is None:
        raise VersioningError(f"no corpus with DVC hash {md5} in the cache of {root}, and no DVC remote is configured")
    name, url = location
    _dvc(root, "fetch", "--remote", name, _relative(root, dvc_file))
    manifest = _cached_manifest(objects, md5)
    if manifest is None:
        raise VersioningError(f"no corpus with DVC hash {md5} in the cache or in remote '{name}' ({url})")
    return manifest
