"""Pure parts of diagnose (§3): how a running query's text is shown, literals hidden."""

from __future__ import annotations

import pytest

from runbook.diagnose import hide_literals, mask_literals


@pytest.mark.parametrize(
    ("query", "shown"),
    [
        ("SELECT 'hunter2'", "SELECT '?'"),
        ("SELECT 'it''s hunter2', 1", "SELECT '?', 1"),
        ("SELECT E'a\\'hunter2\\\\', x", "SELECT '?', x"),
        ("SELECT e'hunter2''s', x", "SELECT '?', x"),
        ("SELECT $$hunter2$$, 2", "SELECT '?', 2"),
        ("SELECT $pw$hunter2 ' still inside$pw$, 3", "SELECT '?', 3"),
        ("DO $outer$ BEGIN PERFORM $$hunter2$$; PERFORM $inner$x$inner$; END $outer$; SELECT 4",
         "DO '?'; SELECT 4"),  # only the same tag closes: the inner quotes are part of the outer literal
        ("SELECT $a$hunter2 $b$ not the end $a$, 5", "SELECT '?', 5"),
        ("SELECT 'hunter2 cut short by track_activity_query_size", "SELECT '?'"),
        ("SELECT $tag$hunter2 cut short", "SELECT '?'"),
        ("SELECT E'hunter2\\' cut short", "SELECT '?'"),
        ("SELECT $1, $2 FROM t WHERE a = $3", "SELECT $1, $2 FROM t WHERE a = $3"),  # parameters, not quotes
        ('SELECT "it\'s" FROM t WHERE p = \'hunter2\'', 'SELECT "it\'s" FROM t WHERE p = \'?\''),
        ("SELECT price$usd, a$b$c FROM t WHERE p = 'hunter2'", "SELECT price$usd, a$b$c FROM t WHERE p = '?'"),
        ("SELECT name FROM t WHERE p = 'hunter2'", "SELECT name FROM t WHERE p = '?'"),  # the e of name starts nothing
        ("-- it's a comment\nSELECT 'hunter2'", "-- it's a comment\nSELECT '?'"),
        ("/* it's /* nested */ still */ SELECT 'hunter2'", "/* it's /* nested */ still */ SELECT '?'"),
        ("", ""),
    ],
)
def test_every_kind_of_string_literal_is_hidden(query: str, shown: str) -> None:
    assert hide_literals(query) == shown
    assert "hunter2" not in mask_literals(query, limit=1000)


def test_a_long_query_is_collapsed_and_cut() -> None:
    text = mask_literals("SELECT  $$hunter2$$,\n\t" + "x, " * 100, limit=40)
    assert text.startswith("SELECT '?', x, x,") and text.endswith("...") and len(text) == 40
