"""The CLI's progress bar: redrawn in place on a terminal, a line per tenth in a log."""

from __future__ import annotations

import io

from runbook import progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_one_line_per_tenth_and_the_end() -> None:
    out = io.StringIO()
    stop = progress.listen(progress.Bar(out))
    try:
        for done in range(0, 1001, 50):
            progress.report("clean-up of db", done, 1000)
    finally:
        stop()
    progress.report("clean-up of db", 1000, 1000)  # nobody listens any more
    lines = out.getvalue().splitlines()
    assert lines[0] == "clean-up of db:   0% 0/1,000 rows"
    assert lines[-1] == "clean-up of db: 100% 1,000/1,000 rows"
    assert len(lines) == 11  # 0 %, 10 %, ... 100 %, each once


def test_a_terminal_gets_a_bar_redrawn_in_place_that_ends_with_a_newline() -> None:
    out = Terminal()
    bar = progress.Bar(out)
    bar("clean-up of db", 250, 1000)
    bar("clean-up of db", 260, 1000)  # within 0.1 s of the last draw: skipped
    bar("clean-up of db", 1000, 1000)  # the end is always drawn
    text = out.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n")
    assert "[########----------------------]  25% 250/1,000 rows" in text
    assert "[##############################] 100% 1,000/1,000 rows" in text
