"""Where the landing zone and the warehouse live: a local folder, an `s3://` URL, or any fsspec URL.

A location's `Backend` is chosen once, from its URL (`backend_of`), and does every operation whose
local and remote forms differ: conditional and atomic writes, tree copies and removal, installing a
finished local file (the catalog), object metadata. Callers keep one code path for both.

Paths are `upath.UPath` (or `pathlib.Path` for local folders), so reading is the same everywhere.
S3 endpoint and credentials come from the environment, as botocore reads them (AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, profiles), so none sit in settings.

The one write that must be atomic and exclusive, the warehouse manifest, goes through
`write_if_unchanged`: on S3 a conditional PUT (If-Match on the ETag read, or If-None-Match: * for a
first manifest); locally an exclusive lock, a content check and `os.replace`. Other fsspec
filesystems have no conditional write: they can hold a landing zone but not a warehouse.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, cast

import polars as pl
from upath import UPath

from flows.failures import ConcurrentUpdate as ConcurrentUpdate  # raised here; defined with the other errors
from flows.failures import UsageError

# Attempts per S3 request (botocore's standard mode backs off exponentially between them, so
# about 15 s of errors are ridden out); then the request fails and the run fails with it.
# s3fs's own retry loop is turned off so the two do not multiply.
S3_RETRY_ATTEMPTS = 5

# HTTP statuses of a refused conditional write: 412 Precondition Failed (If-Match / If-None-Match),
# 409 ConditionalRequestConflict (a concurrent conditional write to the same key in progress).
_PRECONDITION_STATUSES = (409, 412)
_PRECONDITION_CODES = ("PreconditionFailed", "ConditionalRequestConflict")

# A local folder or a fsspec path: both have the pathlib methods the pipeline reads with.
AnyPath = Path | UPath


def storage_path(location: str | os.PathLike[str]) -> UPath:
    """A UPath for a local folder, a `file://` URL, an `s3://` URL (endpoint and credentials from the
    environment) or any other fsspec URL."""
    text = os.fspath(location)
    if text.startswith("file://"):
        return UPath(Path(text.removeprefix("file://") or "/"))
    if text.startswith(("s3://", "s3a://")):
        options: dict[str, Any] = {
            "config_kwargs": {"retries": {"max_attempts": S3_RETRY_ATTEMPTS, "mode": "standard"}},
        }
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            options["endpoint_url"] = endpoint
        path = UPath(text, **options)
        path.fs.retries = 1  # a class attribute of s3fs, not a constructor option
        return path
    if "://" in text:
        return UPath(text)
    return UPath(Path(text))


def entries(folder: AnyPath) -> list[AnyPath]:
    """The files and folders directly in `folder`, by name."""
    return sorted(cast(Iterable[AnyPath], folder.iterdir()), key=lambda p: p.name)


class LocalBackend:
    """A folder on a local (or mounted) filesystem."""

    name = "local"
    conditional_writes = True

    def local_file(self, path: AnyPath) -> Path:
        """The filesystem path of `path`."""
        return Path(path.path) if isinstance(path, UPath) and not isinstance(path, Path) else Path(path)

    def filesystem(self, path: AnyPath) -> Any:
        """The fsspec filesystem DuckDB must be given to read `path` (None: it reads local files itself)."""
        return None

    def reader_path(self, path: AnyPath) -> str:
        """`path` as DuckDB and polars read it."""
        return str(self.local_file(path))

    def read_versioned(self, path: AnyPath) -> tuple[bytes | None, str | None]:
        local = self.local_file(path)
        if not local.exists():
            return None, None
        data = local.read_bytes()
        return data, hashlib.sha256(data).hexdigest()

    def write_if_unchanged(self, path: AnyPath, data: bytes, expected: str | None) -> None:
        local = self.local_file(path)
        local.parent.mkdir(parents=True, exist_ok=True)
        with self.exclusive(path):
            current = hashlib.sha256(local.read_bytes()).hexdigest() if local.exists() else None
            if current != expected:
                raise ConcurrentUpdate(f"{local}: changed by another writer since it was read")
            fd, tmp = create_beside(local)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, local)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            fsync_folder(local.parent)

    def write_bytes(self, path: AnyPath, data: bytes) -> None:
        local = self.local_file(path)
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(data)

    def write_parquet(self, path: AnyPath, frame: pl.DataFrame) -> None:
        local = self.local_file(path)
        local.parent.mkdir(parents=True, exist_ok=True)
        frame.write_parquet(local)

    def remove_tree(self, path: AnyPath) -> None:
        shutil.rmtree(self.local_file(path), ignore_errors=True)

    def put_tree(self, local: Path, target: AnyPath) -> None:
        shutil.copytree(local, self.local_file(target), dirs_exist_ok=True)

    @contextlib.contextmanager
    def exclusive(self, path: AnyPath) -> Iterator[None]:
        """Holds an exclusive lock beside `path` (one writer of it at a time on this filesystem)."""
        local = self.local_file(path)
        local.parent.mkdir(parents=True, exist_ok=True)
        with open(local.parent / f".{local.name}.lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    @contextlib.contextmanager
    def scratch_for(self, path: AnyPath) -> Iterator[Path]:
        """A new local file name to build `path` in, beside it (so os.replace can install it); the
        scratch and its DuckDB write-ahead log are removed at the end, as are those of builds killed
        midway (call it holding `exclusive(path)`)."""
        final = self.local_file(path)
        final.parent.mkdir(parents=True, exist_ok=True)
        for stale in final.parent.glob(f".{final.name}.*.tmp*"):
            stale.unlink(missing_ok=True)
        building = scratch_name(final)
        try:
            yield building
        finally:
            building.unlink(missing_ok=True)
            building.with_name(building.name + ".wal").unlink(missing_ok=True)

    def install(self, built: Path, path: AnyPath, metadata: dict[str, str]) -> None:
        """Makes the finished file `built` (from `scratch_for`) the file at `path`, durably.
        A local file has no metadata: the caller stores it in the file itself."""
        final = self.local_file(path)
        fd = os.open(built, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(built, final)
        fsync_folder(final.parent)

    def metadata(self, path: AnyPath) -> dict[str, str] | None:
        """Stored metadata of a file: never, for local files (None)."""
        return None


class FsspecBackend:
    """A location on any fsspec filesystem (GCS, Azure, HTTP, memory, ...): readable and writable,
    but without a conditional write, so no warehouse manifest can be swapped safely on it."""

    name = "fsspec"
    conditional_writes = False

    def local_file(self, path: AnyPath) -> Path | None:
        return None

    def filesystem(self, path: AnyPath) -> Any:
        return _remote(path).fs

    def reader_path(self, path: AnyPath) -> str:
        return str(path)

    def read_versioned(self, path: AnyPath) -> tuple[bytes | None, str | None]:
        fs, key = _remote(path).fs, _remote(path).path
        try:
            info = fs.info(key, refresh=True)
        except FileNotFoundError:
            return None, None
        etag = str(info.get("ETag") or info.get("etag") or "")
        # Content newer than the ETag (a writer between the two requests) is harmless: the conditional
        # write with the older ETag is refused and the caller reads again.
        return fs.cat_file(key), etag

    def write_if_unchanged(self, path: AnyPath, data: bytes, expected: str | None) -> None:
        raise UsageError(
            f"{path}: {_remote(path).protocol}:// has no conditional write; the warehouse must be a local "
            "folder or an s3:// URL"
        )

    def write_bytes(self, path: AnyPath, data: bytes) -> None:
        path.write_bytes(data)

    def write_parquet(self, path: AnyPath, frame: pl.DataFrame) -> None:
        buffer = io.BytesIO()
        frame.write_parquet(buffer)
        path.write_bytes(buffer.getvalue())

    def remove_tree(self, path: AnyPath) -> None:
        fs, key = _remote(path).fs, _remote(path).path
        if fs.exists(key):
            fs.rm(key, recursive=True)

    def put_tree(self, local: Path, target: AnyPath) -> None:
        remote = _remote(target)
        remote.fs.put(f"{local}/", f"{remote.path}/", recursive=True)

    @contextlib.contextmanager
    def exclusive(self, path: AnyPath) -> Iterator[None]:
        # No lock on object storage: the last whole upload wins, and each upload is whole.
        yield

    @contextlib.contextmanager
    def scratch_for(self, path: AnyPath) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(prefix="trafficreport-") as scratch:
            yield Path(scratch) / path.name

    def install(self, built: Path, path: AnyPath, metadata: dict[str, str]) -> None:
        """Uploads `built` to `path` in one request, `metadata` stored with the object."""
        remote = _remote(path)
        remote.fs.put_file(str(built), remote.path, **self._metadata_arguments(metadata))

    def _metadata_arguments(self, metadata: dict[str, str]) -> dict[str, Any]:
        return {}

    def metadata(self, path: AnyPath) -> dict[str, str] | None:
        """The object's stored metadata (keys lower-cased); FileNotFoundError when it does not exist."""
        remote = _remote(path)
        info = remote.fs.info(remote.path, refresh=True)
        return {str(k).lower(): str(v) for k, v in (info.get("metadata") or {}).items()}


class S3Backend(FsspecBackend):
    """An S3 bucket (AWS or compatible) through s3fs, with S3's conditional writes."""

    name = "s3"
    conditional_writes = True

    def write_if_unchanged(self, path: AnyPath, data: bytes, expected: str | None) -> None:
        fs, key = _remote(path).fs, _remote(path).path
        try:
            if expected is None:
                fs.pipe_file(key, data, mode="create")
            else:
                fs.pipe_file(key, data, IfMatch=expected)
        except Exception as exc:
            if is_precondition_failure(exc):
                raise ConcurrentUpdate(f"{path}: changed by another writer since it was read") from exc
            raise

    def _metadata_arguments(self, metadata: dict[str, str]) -> dict[str, Any]:
        return {"Metadata": metadata}

    def metadata(self, path: AnyPath) -> dict[str, str] | None:
        remote = _remote(path)
        stored = remote.fs.metadata(remote.path, refresh=True)
        return {str(k).lower(): str(v) for k, v in stored.items()}


_LOCAL, _FSSPEC, _S3 = LocalBackend(), FsspecBackend(), S3Backend()
Backend = LocalBackend | FsspecBackend


def backend_of(path: AnyPath) -> Backend:
    """The backend of a location, from its URL's protocol."""
    if isinstance(path, Path):
        return _LOCAL
    protocol = path.protocol
    if protocol in ("", "file", "local"):
        return _LOCAL
    if protocol in ("s3", "s3a"):
        return _S3
    return _FSSPEC


def is_local(path: AnyPath) -> bool:
    """True when `path` is on a local (or mounted) filesystem."""
    return backend_of(path) is _LOCAL


def local_path(path: AnyPath) -> Path:
    """The local filesystem path of a local AnyPath (ValueError for a remote one)."""
    if not is_local(path):
        raise ValueError(f"{path}: not a local path")
    return _LOCAL.local_file(path)


def _remote(path: AnyPath) -> UPath:
    assert isinstance(path, UPath) and not isinstance(path, Path), path
    return path


def is_precondition_failure(exc: BaseException) -> bool:
    """True when `exc` (or an error it was raised from) is a conditional write refused by the
    store: recognised by the HTTP status or S3 error code of the response, or FileExistsError
    (s3fs's form of a refused If-None-Match), never by words in a message."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, FileExistsError):
            return True
        response = getattr(seen, "response", None)
        if isinstance(response, dict):
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = response.get("Error", {}).get("Code")
            if status in _PRECONDITION_STATUSES or code in _PRECONDITION_CODES:
                return True
        seen = seen.__cause__ or seen.__context__
    return False


def read_versioned(path: AnyPath) -> tuple[bytes | None, str | None]:
    """(content, version) of a file, (None, None) when it does not exist; the version is the S3
    ETag, or the SHA-256 of a local file's content."""
    return backend_of(path).read_versioned(path)


def write_if_unchanged(path: AnyPath, data: bytes, expected: str | None) -> None:
    """Writes `data` only if the file still has version `expected` (None: only if it does not
    exist); raises ConcurrentUpdate otherwise."""
    backend_of(path).write_if_unchanged(path, data, expected)


def write_bytes(path: AnyPath, data: bytes) -> None:
    """Writes a whole file (local: parent folders made, written in place)."""
    backend_of(path).write_bytes(path, data)


def write_parquet(path: AnyPath, frame: pl.DataFrame) -> None:
    """Writes a frame as one parquet file (local: parent folders made)."""
    backend_of(path).write_parquet(path, frame)


def read_parquet(path: AnyPath) -> pl.DataFrame:
    """The rows of one parquet file, local or in object storage."""
    if is_local(path):
        return pl.read_parquet(local_path(path))
    return pl.read_parquet(io.BytesIO(path.read_bytes()))


def put_file(local: Path, target: AnyPath) -> None:
    """Moves a local file to `target` (a rename when local, an upload then removal when not)."""
    if is_local(target):
        destination = local_path(target)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(local, destination)
        return
    _remote(target).fs.put_file(str(local), _remote(target).path)
    local.unlink()


def fetch(path: AnyPath, folder: Path) -> Path:
    """A local file with `path`'s content: `path` itself when local, else a download into `folder`
    (a task's scratch; named after the path so two fetches of one file share it)."""
    if is_local(path):
        return local_path(path)
    target = folder / hashlib.sha256(str(path).encode()).hexdigest()[:16] / path.name
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = scratch_name(target)
        _remote(path).fs.get_file(_remote(path).path, str(partial))
        os.replace(partial, target)
    return target


def remove_tree(path: AnyPath) -> None:
    """Removes a folder and everything under it, if it exists."""
    backend_of(path).remove_tree(path)


def put_tree(local: Path, target: AnyPath) -> None:
    """Copies a local folder's files under `target`."""
    backend_of(target).put_tree(local, target)


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
