"""The backup store on a local folder and on a real S3 endpoint (moto's server)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runbook.errors import ConfigError
from tasks.store import LocalStore, ObjectMissing, S3Store, check_store, open_store


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
