"""The weekly flow with landing zone and warehouse in S3: a real S3 HTTP server (moto) on
127.0.0.1, reached through s3fs like any S3 endpoint, and one that fails requests."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import duckdb
import polars as pl
import pytest
import s3fs

from flows import storage
from flows.publish import MANIFEST, local_catalog, publish_week, read_manifest, read_published
from flows.settings import Settings
from flows.weekly import PUBLISHED_TABLES, weekly_report
from tests.conftest import WEEK
from transforms.run_records import PublicationRecord

RECORD = PublicationRecord(audit_passed=True, replaced_run=None)


@pytest.fixture(scope="module")
def buckets(s3_endpoint: str) -> s3fs.S3FileSystem:
    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint)
    for bucket in ("landing", "warehouse"):
        if not fs.exists(bucket):
            fs.mkdir(bucket)
    return fs


@pytest.fixture(scope="module")
def s3_landing(buckets: s3fs.S3FileSystem, small_landing: Path) -> str:
    fs = buckets
    fs.put(f"{small_landing}/", "landing/week/", recursive=True)
    return "s3://landing/week"


def _table(warehouse: storage.AnyPath, name: str) -> pl.DataFrame:
    return read_published(warehouse, read_manifest(warehouse), name, str(WEEK)).sort(pl.all())


def test_weekly_flow_on_s3_publishes_what_the_local_run_publishes(
    s3_landing: str, small_settings: Settings, prefect_server: str
) -> None:
    local = weekly_report(WEEK, small_settings)
    remote_settings = small_settings.model_copy(
        update={
            "landing": storage.storage_path(s3_landing),
            "warehouse": storage.storage_path("s3://warehouse/wh"),
        }
    )
    remote = weekly_report(WEEK, remote_settings)
    assert remote.published and local.published
    assert remote.ingest is not None and local.ingest is not None
    assert remote.ingest.exporters[0].files == local.ingest.exporters[0].files
    for name in PUBLISHED_TABLES:
        assert _table(remote_settings.warehouse, name).equals(_table(small_settings.warehouse, name)), name  # type: ignore[attr-defined]
    # The catalog was built by DuckDB reading S3 through s3fs; analysts get it as a local file.
    con = duckdb.connect(str(local_catalog(remote_settings.warehouse)), read_only=True)
    try:
        users = con.execute("select count(*) from user_week_usage where week = $w", {"w": WEEK}).fetchone()
        tables = con.execute("select count(*) from table1_broadband_usage").fetchone()
    finally:
        con.close()
    assert users is not None and users[0] == _table(small_settings.warehouse, "user_week_usage").height  # type: ignore[attr-defined]
    assert tables is not None and tables[0] > 0


def test_s3_manifest_writes_are_conditional(buckets: s3fs.S3FileSystem) -> None:
    path = storage.storage_path("s3://warehouse/conditional/_manifest.json")
    storage.write_if_unchanged(path, b"first", None)
    with pytest.raises(storage.ConcurrentUpdate):
        storage.write_if_unchanged(path, b"again", None)  # If-None-Match: * on an existing object
    data, version = storage.read_versioned(path)
    assert data == b"first" and version
    storage.write_if_unchanged(path, b"second", version)
    with pytest.raises(storage.ConcurrentUpdate):
        storage.write_if_unchanged(path, b"stale", version)  # If-Match on the ETag read before
    assert storage.read_versioned(path)[0] == b"second"


class _FaultyS3(ThreadingHTTPServer):
    """Forwards to the S3 server, answering 503 SlowDown to the first `failures` requests."""

    def __init__(self, target: str, failures: int) -> None:
        super().__init__(("127.0.0.1", 0), _Forward)
        self.target = target.removeprefix("http://")
        self.failures = failures
        self.requests = 0
        self.lock = threading.Lock()


class _Forward(BaseHTTPRequestHandler):
    server: _FaultyS3
    protocol_version = "HTTP/1.1"  # answers "Expect: 100-continue", which S3 clients send with bodies

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass

    def _handle(self) -> None:
        body = self._body()
        with self.server.lock:
            self.server.requests += 1
            fail = self.server.requests <= self.server.failures
        if fail:
            payload = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
            self.send_response(503)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        conn = http.client.HTTPConnection(self.server.target, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("transfer-encoding", "expect")}
        headers["Content-Length"] = str(len(body))
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        self.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        chunks = []
        while size := int(self.rfile.readline().split(b";")[0], 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass  # trailers
        return b"".join(chunks)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle


@pytest.fixture()
def faulty_s3(s3_endpoint: str, buckets: s3fs.S3FileSystem, monkeypatch: pytest.MonkeyPatch) -> Iterator[_FaultyS3]:
    proxy = _FaultyS3(s3_endpoint, failures=0)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{proxy.server_address[1]}")
    yield proxy
    proxy.shutdown()
    proxy.server_close()


def _tiny() -> dict[str, pl.DataFrame]:
    return {"usage_summary": pl.DataFrame({"week": [WEEK], "mean_mb": [1.0]})}


def test_s3_errors_are_retried(faulty_s3: _FaultyS3) -> None:
    faulty_s3.failures = 3
    warehouse = storage.storage_path("s3://warehouse/flaky")
    publish_week(warehouse, WEEK, "run-a", _tiny(), RECORD, base_run=None)
    assert faulty_s3.requests > 3
    assert read_manifest(warehouse)["tables"]["usage_summary"][str(WEEK)]["run_id"] == "run-a"


def test_an_s3_endpoint_that_keeps_failing_fails_the_publication_cleanly(faulty_s3: _FaultyS3) -> None:
    faulty_s3.failures = 10**6
    warehouse = storage.storage_path("s3://warehouse/down")
    with pytest.raises(OSError, match="SlowDown|reduce your request rate|503"):
        publish_week(warehouse, WEEK, "run-a", _tiny(), RECORD, base_run=None)
    assert faulty_s3.requests >= storage.S3_RETRY_ATTEMPTS
    # Nothing became visible: the warehouse has no manifest (checked behind the proxy's back).
    direct = s3fs.S3FileSystem(endpoint_url=faulty_s3.target and f"http://{faulty_s3.target}")
    assert not direct.exists(f"warehouse/down/{MANIFEST}")
