"""Where the landing zone and the warehouse live: a local folder or an `s3://` URL, through fsspec.

Paths are `upath.UPath`, so the same code reads a local disk and S3 (s3fs). S3 endpoint and
credentials come from the environment, as botocore reads them (AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, profiles), so none sit in settings.

The one write that must be atomic and exclusive, the warehouse manifest, goes through
`write_if_unchanged`: on S3 a conditional PUT (If-Match on the ETag read, or If-None-Match: * for a
first manifest); locally an exclusive lock, a content check and `os.replace`.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

from upath import UPath

# Attempts per S3 request (botocore's standard mode backs off exponentially between them, so
# about 15 s of errors are ridden out); then the request fails and the run fails with it.
# s3fs's own retry loop is turned off so the two do not multiply.
S3_RETRY_ATTEMPTS = 5


# A local folder or a fsspec path: both have the pathlib methods the pipeline reads with.
AnyPath = Path | UPath


class ConcurrentUpdate(RuntimeError):
    """Someone else changed a file between our read and our conditional write."""


def storage_path(location: str | os.PathLike[str]) -> UPath:
    """A UPath for a local folder or an s3:// URL (endpoint and credentials from the environment)."""
    text = os.fspath(location)
    if text.startswith("s3://"):
        options: dict[str, Any] = {
            "config_kwargs": {"retries": {"max_attempts": S3_RETRY_ATTEMPTS, "mode": "standard"}},
        }
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            options["endpoint_url"] = endpoint
        path = UPath(text, **options)
        path.fs.retries = 1  # a class attribute of s3fs, not a constructor option
        return path
    return UPath(Path(text))


def entries(folder: AnyPath) -> list[AnyPath]:
    """The files and folders directly in `folder`, by name."""
    return sorted(cast(Iterable[AnyPath], folder.iterdir()), key=lambda p: p.name)


def is_local(path: AnyPath) -> bool:
    return isinstance(path, Path) or path.protocol in ("", "file", "local")


def local_path(path: AnyPath) -> Path:
    """The local filesystem path of a local AnyPath."""
    return Path(path) if isinstance(path, Path) else local_path(path)


def _remote(path: AnyPath) -> UPath:
    assert isinstance(path, UPath), path
    return path


def read_versioned(path: AnyPath) -> tuple[bytes | None, str | None]:
    """(content, version) of a file, (None, None) when it does not exist; the version is the S3
    ETag, or the SHA-256 of a local file's content."""
    if is_local(path):
        local = local_path(path)
        if not local.exists():
            return None, None
        data = local.read_bytes()
        return data, hashlib.sha256(data).hexdigest()
    fs, key = _remote(path).fs, _remote(path).path
    try:
        info = fs.info(key, refresh=True)
    except FileNotFoundError:
        return None, None
    etag = str(info.get("ETag") or info.get("etag") or "")
    # Content newer than the ETag (a writer between the two requests) is harmless: the conditional
    # write with the older ETag is refused and the caller reads again.
    return fs.cat_file(key), etag


def write_if_unchanged(path: AnyPath, data: bytes, expected: str | None) -> None:
    """Writes `data` only if the file still has version `expected` (None: only if it does not
    exist); raises ConcurrentUpdate otherwise."""
    if is_local(path):
        _local_write_if_unchanged(local_path(path), data, expected)
        return
    fs, key = _remote(path).fs, _remote(path).path
    try:
        if expected is None:
            fs.pipe_file(key, data, mode="create")
        else:
            fs.pipe_file(key, data, IfMatch=expected)
    except Exception as exc:
        if _is_precondition_failure(exc):
            raise ConcurrentUpdate(f"{path}: changed by another writer since it was read") from exc
        raise


def _is_precondition_failure(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        text = f"{type(seen).__name__} {seen}"
        if "PreconditionFailed" in text or "412" in text or isinstance(seen, FileExistsError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _local_write_if_unchanged(path: Path, data: bytes, expected: str | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        current = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None
        if current != expected:
            raise ConcurrentUpdate(f"{path}: changed by another writer since it was read")
        fd, tmp = create_beside(path)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_folder(path.parent)


def scratch_name(path: Path) -> Path:
    """A new hidden name beside `path` (same folder, so same filesystem: os.replace can rename it)."""
    return path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"


def create_beside(path: Path) -> tuple[int, Path]:
    """Creates a new empty hidden file beside `path`; returns its descriptor (open for writing) and path.
    Created like any file (mode 0666 less the umask), not 0600 as mkstemp would, so the file that
    replaces `path` is readable by whoever the umask lets read the warehouse's data files."""
    while True:
        tmp = scratch_name(path)
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666), tmp
        except FileExistsError:
            continue


def fsync_folder(folder: Path) -> None:
    """Makes a rename in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes(path: AnyPath, data: bytes) -> None:
    """Writes a whole file (local: parent folders made, written in place)."""
    if is_local(path):
        local_path(path).parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def remove_tree(path: AnyPath) -> None:
    """Removes a folder and everything under it, if it exists."""
    if is_local(path):
        import shutil

        shutil.rmtree(local_path(path), ignore_errors=True)
        return
    fs, key = _remote(path).fs, _remote(path).path
    if fs.exists(key):
        fs.rm(key, recursive=True)


def put_tree(local: Path, target: AnyPath) -> None:
    """Copies a local folder's files under `target` (a local folder or an S3 prefix)."""
    if is_local(target):
        import shutil

        shutil.copytree(local, local_path(target), dirs_exist_ok=True)
        return
    remote = _remote(target)
    remote.fs.put(f"{local}/", f"{remote.path}/", recursive=True)
