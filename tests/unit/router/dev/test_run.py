"""The dev console never lets a closed output stop the run or its cleanup."""

import contextlib
import os

from router.dev.run import DevConsole


def test_a_closed_pipe_marks_the_console_closed_instead_of_raising() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # like `leadrouter dev | head` after head exits
    out = os.fdopen(write_end, "w")
    try:
        console = DevConsole(out)
        console.say("first line")  # raises BrokenPipeError inside; must not escape
        assert console.closed
        console.say("stopping…")  # what the cleanup prints: still no exception
    finally:
        with contextlib.suppress(BrokenPipeError):
            out.close()
