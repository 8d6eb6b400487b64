"""Choosing pg_dump by the server's version, and reading stored dumps."""

from __future__ import annotations

import zstandard
from pathlib import Path

import pytest

from runbook.errors import ConfigError
from tasks.pgtools import DumpUnreadable, bundled_bin_dir, candidate_bin_dirs, choose_pg_tools, fetch_dump, parse_tool_version


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


def _fake_tools(folder: Path, version_line: str) -> Path:
    """A bin folder whose pg_dump and pg_restore print ``version_line`` for --version."""
    folder.mkdir(parents=True)
    for name in ("pg_dump", "pg_restore"):
        tool = folder / name
        tool.write_text(f"#!/bin/sh\necho '{version_line.replace('pg_dump', name)}'\n")
        tool.chmod(0o755)
    return folder


@pytest.fixture
def tool_folders(tmp_path: Path) -> dict[str, Path]:
    return {
        "bundled16": _fake_tools(tmp_path / "pgserver/pginstall/bin", "pg_dump (PostgreSQL) 16.2"),
        "debian16": _fake_tools(tmp_path / "usr/lib/postgresql/16/bin", "pg_dump (PostgreSQL) 16.4 (Debian 16.4-1.pgdg120+1)"),
        "debian15": _fake_tools(tmp_path / "usr/lib/postgresql/15/bin", "pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"),
        "debian17": _fake_tools(tmp_path / "usr/lib/postgresql/17/bin", "pg_dump (PostgreSQL) 17.2 (Ubuntu 17.2-1.pgdg24.04+1)"),
    }


@pytest.mark.parametrize(
    "server, found, chosen",
    [
        (16, ["bundled16", "debian16"], "debian16"),  # same major: the distribution's
        (16, ["debian16", "bundled16"], "debian16"),  # whatever the order found
        (16, ["bundled16", "debian15"], "bundled16"),  # the distribution's is too old
        (16, ["bundled16", "debian17", "debian16"], "debian17"),  # the newest major first
        (15, ["debian15", "bundled16"], "bundled16"),
    ],
)
def test_the_distributions_tools_win_at_the_same_major(tool_folders: dict[str, Path], server: int, found: list[str], chosen: str) -> None:
    tools = choose_pg_tools(server, candidates=[tool_folders[name] for name in found], bundled_dir=tool_folders["bundled16"])
    assert tools.bin_dir == tool_folders[chosen]
    assert tools.bundled is (chosen == "bundled16")


def test_the_version_is_read_from_distribution_builds_too(tool_folders: dict[str, Path]) -> None:
    tools = choose_pg_tools(16, candidates=[tool_folders["debian16"]], bundled_dir=tool_folders["bundled16"])
    assert (tools.major, tools.version) == (16, "16.4")
    assert tools.version_line == "pg_dump (PostgreSQL) 16.4 (Debian 16.4-1.pgdg120+1)"
    assert parse_tool_version("pg_dump (PostgreSQL) 17devel") == (17, "17")
    assert parse_tool_version("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)") == (15, "15.18")


def test_the_bundled_copy_is_the_last_candidate() -> None:
    folders = candidate_bin_dirs()
    bundled = bundled_bin_dir()
    assert bundled is not None and folders[-1] == bundled
