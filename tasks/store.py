"""The backup store: a local folder (the embedded default) or S3 spoken to with boto3.

Both offer the same small interface. Writes are streaming: ``open_writer`` returns a
writer that takes chunks and becomes visible under its key only on ``commit``; an
``abort`` (or a crash, cleaned up by ``cleanup_incomplete``) leaves nothing behind. With
S3 the writer is a multipart upload whose parts are sent by a background thread while
the caller produces the next ones, so a dump never has to sit on local disk.

Errors: transient failures (connection refused, timeouts, 5xx, throttling) raise
``TransientError``; permanent ones (missing bucket, access denied, missing object)
raise ``StoreError`` at once. Nothing here deletes an object except ``delete``, which
only the prune step calls.
"""

from __future__ import annotations

import json
import os
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from runbook.errors import ConfigError, StoreError, TransientError

PARTIAL_SUFFIX = ".partial"
READ_CHUNK = 4 * 1024 * 1024

MiB = 1024 * 1024
# S3's multipart limits: every part but the last 5 MiB..5 GiB, at most 10,000 parts,
# an object of at most 5 TiB.
MIN_PART_BYTES = 5 * MiB
MAX_PART_BYTES = 5 * 1024 * MiB
MAX_PARTS = 10_000
MAX_OBJECT_BYTES = 5 * 1024 * 1024 * MiB


class ObjectMissing(StoreError):
    """The key does not exist in the store."""


class StoreWriter(Protocol):
    def write(self, data: bytes) -> None: ...
    def commit(self) -> None: ...
    def abort(self) -> None: ...


class BackupStore(Protocol):
    url: str

    def open_writer(self, key: str) -> StoreWriter: ...
    def put_bytes(self, key: str, data: bytes) -> None: ...
    def get_bytes(self, key: str) -> bytes: ...
    def iter_chunks(self, key: str, chunk_size: int = READ_CHUNK) -> Iterator[bytes]: ...
    def list_keys(self, prefix: str) -> list[str]: ...
    def size_of(self, key: str) -> int: ...
    def delete(self, key: str) -> None: ...
    def cleanup_incomplete(self, prefix: str) -> int: ...


def put_json(store: BackupStore, key: str, document: dict[str, Any]) -> None:
    store.put_bytes(key, json.dumps(document, indent=2, sort_keys=True).encode())


def get_json(store: BackupStore, key: str) -> dict[str, Any]:
    raw = store.get_bytes(key)
    try:
        return json.loads(raw)
    except ValueError as err:
        raise StoreError(f"{key} in {store.url} is not valid JSON: {err}") from None


# --------------------------------------------------------------------------- local


class _LocalWriter:
    def __init__(self, final: Path) -> None:
        self.final = final
        self.partial = final.with_name(final.name + PARTIAL_SUFFIX)
        final.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.partial, "wb")  # noqa: SIM115 - closed by commit/abort

    def write(self, data: bytes) -> None:
        self._file.write(data)

    def commit(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.partial, self.final)

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        self.partial.unlink(missing_ok=True)


class LocalStore:
    """Backups in a local folder; objects appear atomically (write .partial, rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.url = str(self.root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise ConfigError(f"store key {key!r} escapes the store folder {self.root}")
        return path

    def open_writer(self, key: str) -> StoreWriter:
        return _LocalWriter(self._path(key))

    def put_bytes(self, key: str, data: bytes) -> None:
        writer = self.open_writer(key)
        try:
            writer.write(data)
            writer.commit()
        except BaseException:
            writer.abort()
            raise

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise ObjectMissing(f"{key} is missing from {self.url}") from None

    def iter_chunks(self, key: str, chunk_size: int = READ_CHUNK) -> Iterator[bytes]:
        try:
            handle = open(self._path(key), "rb")  # noqa: SIM115
        except FileNotFoundError:
            raise ObjectMissing(f"{key} is missing from {self.url}") from None
        with handle:
            while chunk := handle.read(chunk_size):
                yield chunk

    def size_of(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            raise ObjectMissing(f"{key} is missing from {self.url}") from None

    def list_keys(self, prefix: str) -> list[str]:
        base = self._path(prefix) if prefix else self.root
        if not base.is_dir():
            return []
        return sorted(
            str(path.relative_to(self.root))
            for path in base.rglob("*")
            if path.is_file() and not path.name.endswith(PARTIAL_SUFFIX)
        )

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def cleanup_incomplete(self, prefix: str) -> int:
        base = self._path(prefix) if prefix else self.root
        if not base.is_dir():
            return 0
        removed = 0
        for path in base.rglob("*" + PARTIAL_SUFFIX):
            path.unlink(missing_ok=True)
            removed += 1
        return removed


# --------------------------------------------------------------------------- S3


def part_size(number: int, base: int, every: int) -> int:
    """The size of part ``number`` (from 1): ``base``, doubled every ``every`` parts,
    within S3's 5 MiB..5 GiB. A dump is streamed, so its size is unknown when the
    upload starts: small dumps get small parts, large ones parts that grow."""
    doublings = min((number - 1) // every, 32)  # 5 MiB << 10 is above 5 GiB already
    return max(MIN_PART_BYTES, min(MAX_PART_BYTES, max(base, MIN_PART_BYTES) << doublings))


def capacity(base: int, every: int, max_parts: int = MAX_PARTS) -> int:
    """The most ``max_parts`` parts of that schedule hold."""
    total, number = 0, 1
    while number <= max_parts:
        size = part_size(number, base, every)
        run = max_parts - number + 1 if size == MAX_PART_BYTES else min(every - (number - 1) % every, max_parts - number + 1)
        total += size * run
        number += run
    return total


def growth_interval(base: int, max_parts: int = MAX_PARTS, target: int = MAX_OBJECT_BYTES) -> int:
    """How many parts go by between doublings: the most that still lets ``max_parts``
    parts hold ``target`` bytes (parts stay as small as they can, for as long as they
    can: they are held in memory). 1 when even doubling every part cannot reach it."""
    low, high = 1, max(max_parts, 1)
    if capacity(base, high, max_parts) >= target:
        return high
    while low < high:  # capacity falls as the interval grows
        middle = (low + high + 1) // 2
        if capacity(base, middle, max_parts) >= target:
            low = middle
        else:
            high = middle - 1
    return low

_PERMANENT_S3_CODES = {
    "NoSuchBucket": "the bucket does not exist: create it or fix RUNBOOK_BACKUP_STORE",
    "AccessDenied": "access denied: check the AWS credentials and the bucket policy",
    "InvalidAccessKeyId": "the AWS access key id is not known to the store",
    "SignatureDoesNotMatch": "the AWS secret key is wrong",
    "InvalidBucketName": "the bucket name is invalid",
}
_TRANSIENT_S3_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
    "503",
    "500",
    "502",
    "504",
}


def translate_s3_error(err: Exception, action: str) -> Exception:
    """A botocore error as TransientError, ObjectMissing or StoreError."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        ReadTimeoutError,
    )

    if isinstance(err, ClientError):
        code = str(err.response.get("Error", {}).get("Code", ""))
        status = int(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code in ("NoSuchKey", "404", "NotFound"):
            return ObjectMissing(f"{action}: object not found")
        if code in _PERMANENT_S3_CODES:
            return StoreError(f"{action}: {_PERMANENT_S3_CODES[code]} ({code})")
        if code in _TRANSIENT_S3_CODES or status >= 500 or status == 429:
            return TransientError(f"{action}: the store answered {code or status}; will retry")
        return StoreError(f"{action}: the store refused ({code or status})")
    if isinstance(err, (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError)):
        return TransientError(f"{action}: cannot reach the store ({type(err).__name__})")
    if isinstance(err, NoCredentialsError):
        return StoreError(f"{action}: no AWS credentials found (environment, ~/.aws or instance role)")
    if isinstance(err, BotoCoreError):
        return TransientError(f"{action}: {type(err).__name__}")
    return err


class _S3Writer:
    """A multipart upload fed chunk by chunk; parts go up from a background thread."""

    def __init__(self, store: S3Store, key: str) -> None:
        self.store = store
        self.key = key
        self.buffer = bytearray()
        self.parts: list[dict[str, Any]] = []
        self.part_sizes: list[int] = []
        self._every = growth_interval(store.part_size, store.max_parts)
        self._counter = 0
        self.error: BaseException | None = None
        self._queue: queue.Queue[tuple[int, bytes] | None] = queue.Queue(maxsize=2)
        try:
            created = store.client.create_multipart_upload(Bucket=store.bucket, Key=key)
        except Exception as err:
            raise translate_s3_error(err, f"start upload of {key}") from err
        self.upload_id = created["UploadId"]
        self._thread = threading.Thread(target=self._send_parts, name=f"s3-upload-{key}", daemon=True)
        self._thread.start()

    def _send_parts(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self.error is not None:
                continue
            number, body = item
            try:
                answer = self.store.client.upload_part(
                    Bucket=self.store.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=body
                )
                self.parts.append({"PartNumber": number, "ETag": answer["ETag"]})
            except BaseException as err:  # handed to the producer on its next write
                self.error = err

    def _raise_if_failed(self) -> None:
        if self.error is not None:
            raise translate_s3_error(self.error, f"upload part of {self.key}") from self.error  # type: ignore[arg-type]

    def write(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= (size := part_size(self._counter + 1, self.store.part_size, self._every)):
            if self._counter + 1 >= self.store.max_parts:
                # the last part the upload may have takes the rest, on commit
                if len(self.buffer) > size:
                    room = capacity(self.store.part_size, self._every, self.store.max_parts)
                    raise StoreError(
                        f"upload of {self.key}: the object is larger than {self.store.max_parts:,} parts can hold "
                        f"({room:,} bytes; S3 objects are at most 5 TiB)"
                    )
                return
            self._counter += 1
            body = bytes(self.buffer[:size])
            del self.buffer[:size]
            self._raise_if_failed()
            self.part_sizes.append(size)
            self._queue.put((self._counter, body))

    def commit(self) -> None:
        if self.buffer or self._counter == 0:
            self._counter += 1
            self.part_sizes.append(len(self.buffer))
            self._queue.put((self._counter, bytes(self.buffer)))
            self.buffer.clear()
        self._queue.put(None)
        self._thread.join()
        self._raise_if_failed()
        parts = sorted(self.parts, key=lambda part: part["PartNumber"])
        try:
            self.store.client.complete_multipart_upload(
                Bucket=self.store.bucket, Key=self.key, UploadId=self.upload_id, MultipartUpload={"Parts": parts}
            )
        except Exception as err:
            self.abort()
            raise translate_s3_error(err, f"complete upload of {self.key}") from err

    def abort(self) -> None:
        if self._thread.is_alive():
            self.error = self.error or RuntimeError("aborted")
            try:
                while True:
                    self._queue.get_nowait()
            except queue.Empty:
                pass
            self._queue.put(None)
            self._thread.join(timeout=60)
        try:
            self.store.client.abort_multipart_upload(Bucket=self.store.bucket, Key=self.key, UploadId=self.upload_id)
        except Exception:  # noqa: BLE001 - cleanup_incomplete finds what this could not abort
            pass


@dataclass
class S3Store:
    """Backups in an S3 bucket (or an S3-compatible store) under a prefix."""

    client: Any
    bucket: str
    prefix: str
    part_size: int = 16 * MiB  # the first parts'; later ones grow (part_size())
    max_parts: int = MAX_PARTS

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _strip(self, full: str) -> str:
        return full[len(self.prefix) + 1 :] if self.prefix else full

    def open_writer(self, key: str) -> StoreWriter:
        return _S3Writer(self, self._key(key))

    def put_bytes(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except Exception as err:
            raise translate_s3_error(err, f"write {key} to {self.url}") from err

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except Exception as err:
            raise translate_s3_error(err, f"read {key} from {self.url}") from err

    def iter_chunks(self, key: str, chunk_size: int = READ_CHUNK) -> Iterator[bytes]:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
            yield from body.iter_chunks(chunk_size)
        except Exception as err:
            raise translate_s3_error(err, f"read {key} from {self.url}") from err

    def size_of(self, key: str) -> int:
        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ContentLength"])
        except Exception as err:
            raise translate_s3_error(err, f"look up {key} in {self.url}") from err

    def list_keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
                keys.extend(self._strip(item["Key"]) for item in page.get("Contents", []))
        except Exception as err:
            raise translate_s3_error(err, f"list {self.url}") from err
        return sorted(keys)

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as err:
            raise translate_s3_error(err, f"delete {key} from {self.url}") from err

    def cleanup_incomplete(self, prefix: str) -> int:
        """Abort multipart uploads left under ``prefix`` by a killed backup."""
        aborted = 0
        try:
            answer = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=self._key(prefix))
            for upload in answer.get("Uploads", []):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                aborted += 1
        except Exception as err:
            raise translate_s3_error(err, f"clean up uploads in {self.url}") from err
        return aborted

    def incomplete_uploads(self, prefix: str = "") -> list[str]:
        answer = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=self._key(prefix))
        return [upload["Key"] for upload in answer.get("Uploads", [])]


def make_s3_client(endpoint_url: str | None, connect_timeout: int = 10, read_timeout: int = 60) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"mode": "standard", "max_attempts": 3},
    )
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)


def open_store(url: str, *, s3_endpoint_url: str | None = None, part_size_mb: int = 16, client: Any = None) -> BackupStore:
    """The store behind a RUNBOOK_BACKUP_STORE value: a folder, file:///path or s3://bucket/prefix."""
    parts = urlsplit(url)
    if parts.scheme == "s3":
        return S3Store(
            client=client or make_s3_client(s3_endpoint_url),
            bucket=parts.netloc,
            prefix=parts.path.strip("/"),
            part_size=part_size_mb * 1024 * 1024,
        )
    if parts.scheme == "file":
        return LocalStore(Path(parts.path))
    return LocalStore(Path(url))


def check_store(store: BackupStore) -> None:
    """Fail at once with a clear message when the store cannot be used at all."""
    if isinstance(store, S3Store):
        try:
            store.client.head_bucket(Bucket=store.bucket)
        except Exception as err:
            from botocore.exceptions import ClientError

            code = str(err.response.get("Error", {}).get("Code")) if isinstance(err, ClientError) else ""
            if code in ("404", "NoSuchBucket"):
                raise ConfigError(
                    f"RUNBOOK_BACKUP_STORE: the bucket {store.bucket!r} does not exist; create it or name another"
                ) from None
            if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise ConfigError(
                    f"RUNBOOK_BACKUP_STORE: access to the bucket {store.bucket!r} was denied; check the AWS credentials"
                ) from None
            raise translate_s3_error(err, f"open {store.url}") from err
    else:
        assert isinstance(store, LocalStore)
        try:
            store.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreError(f"cannot create the backup folder {store.root}: {err.strerror}") from None


# --------------------------------------------------------------------------- Prefect tasks

# The task is made on first use (a module ``__getattr__``, PEP 562): the plain store
# above serves the read-only commands (``runbook backup-list``), which answer without
# importing Prefect at all (about 3 s of CPU); ``from tasks.store import
# open_backup_store`` works as before.


def _open_backup_store(url: str, s3_endpoint_url: str | None = None, part_size_mb: int = 16) -> BackupStore:
    """Open the backup store and check that it can be used (the bucket exists)."""
    from prefect import get_run_logger

    store = open_store(url, s3_endpoint_url=s3_endpoint_url, part_size_mb=part_size_mb)
    get_run_logger().info("Opening the backup store %s", store.url)
    check_store(store)
    return store


def _store_report(store: BackupStore, key: str, data: bytes) -> str:
    """Keep a report file (a review's chart) in the backup store beside the backups, to download."""
    from prefect import get_run_logger

    store.put_bytes(key, data)
    get_run_logger().info("Stored %s (%d bytes) in %s", key, len(data), store.url)
    return key


# The Prefect tasks of this module are built on first use, so that read-only commands
# (backup-list) import no Prefect at all.
_LAZY_TASKS = {"open_backup_store": ("open-backup-store", "_open_backup_store"), "store_report": ("store-report", "_store_report")}


def __getattr__(name: str) -> Any:
    if name not in _LAZY_TASKS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from prefect import task
    from prefect.cache_policies import NO_CACHE

    from runbook.retry import RETRIES, backoff, retry_transient

    task_name, fn_name = _LAZY_TASKS[name]
    made = task(name=task_name, retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient,
                cache_policy=NO_CACHE)(globals()[fn_name])
    made.fn.__name__ = made.fn.__qualname__ = name  # noqa: B010 - as if defined here under its name
    globals()[name] = made
    return made
