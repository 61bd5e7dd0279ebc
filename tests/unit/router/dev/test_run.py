"""The dev console never lets a closed output stop the run or its cleanup, and prints Slack text plainly."""

import contextlib
import os

import pytest

from router.alerts.views import slack_escape
from router.dev.run import DevConsole, slack_plain


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


@pytest.mark.parametrize(("mrkdwn", "plain"), [
    ("score 72 &gt;= 60 for Ben &amp; Jerry&#39;s &lt;b&gt;", "score 72 >= 60 for Ben & Jerry&#39;s <b>"),
    ("&amp;lt; stays literal", "&lt; stays literal"),
    ("<https://x.test/a?b=1&amp;c=2|Accept> · <https://x.test/lead>",
     "Accept (https://x.test/a?b=1&c=2) · https://x.test/lead"),
    ("for <@U123ABC> (Rita) in <#C42|sales>, <!here>", "for @U123ABC (Rita) in #sales, @here"),
    ("no markup at all", "no markup at all"),
])
def test_slack_text_is_printed_without_slack_escaping(mrkdwn: str, plain: str) -> None:
    assert slack_plain(mrkdwn) == plain


def test_escaped_user_text_comes_back_unchanged() -> None:
    hostile = "a < b && c > d <https://evil.test|click> &amp; &lt;"
    assert slack_plain(slack_escape(hostile)) == hostile
