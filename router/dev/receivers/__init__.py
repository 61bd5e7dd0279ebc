"""Real local receivers for reps' alerts: a Slack stand-in and an SMTP server.

``leadrouter dev`` points the notifiers at these so alerts show up on the
console, and the integration tests use them to check what was really sent.

* :class:`SlackReceiver` is an aiohttp app on 127.0.0.1 that speaks the two
  Slack endpoints the notifiers (and slack_sdk) use: incoming webhooks
  (``POST /services/{a}/{b}/{c}``) and ``POST /api/chat.postMessage``.
* :class:`SmtpReceiver` is an aiosmtpd server on 127.0.0.1 that parses each
  message into an :class:`email.message.EmailMessage`; optionally with
  STARTTLS or implicit TLS (give it a server ``ssl.SSLContext``), AUTH
  LOGIN/PLAIN against a user table, and injected failures (``fail_next`` /
  ``fail_always`` answer DATA with e.g. ``451`` until cleared).

Both pick a free port, record what they accept, let callers ``await
wait_for(predicate)``, and call an optional ``on_message`` callback.  Both
must be started and stopped from inside a running event loop.

Layout: receivers/slack.py, receivers/smtp.py, and receivers/recording.py for
what they share; import the receivers from this package.
"""

from router.dev.receivers.slack import SlackReceiver, SlackRequest
from router.dev.receivers.smtp import SmtpEnvelope, SmtpReceiver

__all__ = ["SlackReceiver", "SlackRequest", "SmtpEnvelope", "SmtpReceiver"]
