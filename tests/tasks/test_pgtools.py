"""Choosing pg_dump by the server's version, and reading stored dumps."""

from __future__ import annotations

import zstandard
from pathlib import Path

import pytest

from runbook.errors import ConfigError
from tasks.pgtools import DumpUnreadable, candidate_bin_dirs, choose_pg_tools, fetch_dump


def test_the_chosen_pg_dump_is_at_least_the_servers_major() -> None:
    tools = choose_pg_tools(16)
    assert tools.major >= 16 and tools.pg_dump.exists() and tools.pg_restore.exists()


def test_no_new_enough_pg_dump_names_what_was_found_and_what_to_set() -> None:
    with pytest.raises(ConfigError, match=r"no pg_dump of version >= 99 .*found: .*pg_dump \(16.*RUNBOOK_PG_BIN_DIR"):
        choose_pg_tools(99, candidates=candidate_bin_dirs())


def test_a_given_bin_dir_too_old_is_refused(tmp_path: Path) -> None:
    old = Path("/usr/lib/postgresql/15/bin")
    if not (old / "pg_dump").exists():
        pytest.skip("no PostgreSQL 15 client binaries here")
    with pytest.raises(ConfigError, match=r"RUNBOOK_PG_BIN_DIR: .*version 15.* PostgreSQL 16"):
        choose_pg_tools(16, old)


def test_fetch_hashes_the_stored_bytes_and_notices_a_cut_stream(tmp_path: Path) -> None:
    raw = b"PGDMP" + bytes(range(256)) * 4000
    stored = zstandard.ZstdCompressor(write_checksum=True).compress(raw)
    half = len(stored) // 2
    good = fetch_dump([stored[:half], stored[half:], b""], tmp_path / "good.dump")
    assert good.raw_bytes == len(raw) and (tmp_path / "good.dump").read_bytes() == raw
    with pytest.raises(DumpUnreadable, match="truncated") as caught:
        fetch_dump([stored[:-20]], tmp_path / "cut.dump")
    assert caught.value.result.size_bytes == len(stored) - 20
    with pytest.raises(DumpUnreadable, match="after the end"):
        fetch_dump([stored, b"junk"], tmp_path / "long.dump")
