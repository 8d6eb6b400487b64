"""The backup store on a local folder and on a real S3 endpoint (moto's server)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from runbook.errors import ConfigError, StoreError
from tasks.store import (
    MAX_OBJECT_BYTES,
    MAX_PART_BYTES,
    MAX_PARTS,
    MIN_PART_BYTES,
    LocalStore,
    ObjectMissing,
    S3Store,
    capacity,
    check_store,
    growth_interval,
    open_store,
    part_size,
)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    s3 = request.getfixturevalue("s3_server")
    bucket = s3.new_bucket()
    return open_store(f"s3://{bucket}/pre/fix", s3_endpoint_url=s3.endpoint, part_size_mb=5)


def test_a_streamed_object_appears_only_on_commit(store) -> None:  # type: ignore[no-untyped-def]
    data = os.urandom(12 * 1024 * 1024 + 123)  # three 5 MiB parts on S3
    writer = store.open_writer("db/obj.bin")
    for start in range(0, len(data), 1024 * 1024):
        writer.write(data[start : start + 1024 * 1024])
    assert store.list_keys("db/") == []
    writer.commit()
    assert store.list_keys("db/") == ["db/obj.bin"]
    assert store.size_of("db/obj.bin") == len(data)
    assert b"".join(store.iter_chunks("db/obj.bin")) == data


def test_an_aborted_write_leaves_nothing(store) -> None:  # type: ignore[no-untyped-def]
    writer = store.open_writer("db/obj.bin")
    writer.write(os.urandom(6 * 1024 * 1024))
    writer.abort()
    assert store.list_keys("") == []
    if isinstance(store, S3Store):
        assert store.incomplete_uploads() == []


def test_uploads_left_by_a_dead_writer_are_cleaned_up(store) -> None:  # type: ignore[no-untyped-def]
    writer = store.open_writer("db/obj.bin")
    writer.write(os.urandom(6 * 1024 * 1024))  # never committed nor aborted: the process "died"
    assert store.cleanup_incomplete("db/") == 1
    assert store.list_keys("") == []
    if isinstance(store, S3Store):
        writer._queue.put(None)  # let the test's upload thread end
        assert store.incomplete_uploads() == []


def test_reads_of_missing_objects_say_so(store) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ObjectMissing):
        store.get_bytes("db/none.json")
    with pytest.raises(ObjectMissing):
        list(store.iter_chunks("db/none.json"))
    store.put_bytes("db/a.json", b"{}")
    store.delete("db/a.json")
    store.delete("db/a.json")  # already deleted counts as done
    assert store.list_keys("db/") == []


def test_a_local_key_cannot_escape_the_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="escapes"):
        LocalStore(tmp_path).put_bytes("../outside", b"x")


def test_a_missing_bucket_is_a_configuration_error(s3_server) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="RUNBOOK_BACKUP_STORE: the bucket 'absent-bucket' does not exist"):
        check_store(open_store("s3://absent-bucket/x", s3_endpoint_url=s3_server.endpoint))


# --------------------------------------------------------------------------- part sizes

MiB = 1024 * 1024


@pytest.mark.parametrize("base_mb", [5, 16, 64, 512])
def test_ten_thousand_growing_parts_hold_an_object_of_5_tib(base_mb: int) -> None:
    base = base_mb * MiB
    every = growth_interval(base)
    sizes = [part_size(n, base, every) for n in range(1, MAX_PARTS + 1)]
    assert sum(sizes) == capacity(base, every) >= MAX_OBJECT_BYTES == 5 * 1024**4
    assert sizes[0] == base  # small dumps keep the configured size
    assert all(MIN_PART_BYTES <= size <= MAX_PART_BYTES for size in sizes)
    assert sizes == sorted(sizes)  # parts only grow
    # the slowest growth that reaches 5 TiB: a longer interval would fall short
    assert capacity(base, every + 1) < MAX_OBJECT_BYTES


@pytest.mark.parametrize("base, expected", [(1, MIN_PART_BYTES), (5 * MiB - 1, MIN_PART_BYTES), (64 * 1024 * MiB, MAX_PART_BYTES)])
def test_parts_stay_within_s3s_limits(base: int, expected: int) -> None:
    assert part_size(1, base, 1) == expected
    assert part_size(40, base, 1) == MAX_PART_BYTES  # doubling stops at 5 GiB


def test_a_lowered_part_cap_grows_parts_as_fast_as_it_must() -> None:
    assert growth_interval(5 * MiB, max_parts=4) == 1
    assert [part_size(n, 5 * MiB, 1) // MiB for n in (1, 2, 3, 4)] == [5, 10, 20, 40]
    assert capacity(5 * MiB, 1, max_parts=4) == 75 * MiB


def _multipart_etag(data: bytes, sizes: list[int]) -> str:
    """The ETag S3 gives a multipart object: the md5 of the parts' md5s, and their count."""
    digests, start = b"", 0
    for size in sizes:
        digests += hashlib.md5(data[start : start + size]).digest()
        start += size
    assert start == len(data)
    return f'"{hashlib.md5(digests).hexdigest()}-{len(sizes)}"'


def test_a_stream_beyond_the_first_parts_goes_up_in_growing_parts(s3_server) -> None:  # type: ignore[no-untyped-def]
    """With the part cap lowered to 4 and 5 MiB first parts, a 45 MiB stream goes up as
    5 + 10 + 20 + 10 MiB (S3's ETag proves the parts) and reads back byte for byte."""
    store = open_store(f"s3://{s3_server.new_bucket()}/pre", s3_endpoint_url=s3_server.endpoint, part_size_mb=5)
    assert isinstance(store, S3Store)
    store.max_parts = 4
    data = os.urandom(45 * MiB)
    writer = store.open_writer("db/big.bin")
    for start in range(0, len(data), 3 * MiB + 1):
        writer.write(data[start : start + 3 * MiB + 1])
    writer.commit()
    assert writer.part_sizes == [5 * MiB, 10 * MiB, 20 * MiB, 10 * MiB]  # type: ignore[attr-defined]
    head = store.client.head_object(Bucket=store.bucket, Key="pre/db/big.bin")
    assert head["ETag"] == _multipart_etag(data, writer.part_sizes)  # type: ignore[attr-defined]
    digest = hashlib.sha256()
    for chunk in store.iter_chunks("db/big.bin"):
        digest.update(chunk)
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()


def test_a_stream_beyond_what_the_parts_can_hold_fails_and_leaves_nothing(s3_server) -> None:  # type: ignore[no-untyped-def]
    store = open_store(f"s3://{s3_server.new_bucket()}/pre", s3_endpoint_url=s3_server.endpoint, part_size_mb=5)
    assert isinstance(store, S3Store)
    store.max_parts = 4
    writer = store.open_writer("db/big.bin")
    chunk = os.urandom(MiB)
    with pytest.raises(StoreError, match=r"larger than 4 parts can hold \(78,643,200 bytes"):
        for _ in range(76):
            writer.write(chunk)
    writer.abort()
    assert store.list_keys("") == [] and store.incomplete_uploads() == []
