"""The ops console: server-rendered pages on the admin app (``/console/``) for ops, reps and readonly users.

Plain HTML from Python strings with escaping (router/admin/console/html.py), no
build toolchain: the pages work on a laptop and a phone as forms and links.  The
one script is the Live page's few lines of EventSource code (live.py), served
from our own origin (no inline script).  Sign-in with an admin token makes a
server-side session in Redis (session.py); pages.py holds the pages and routes,
lead.py and chart.py the lead page's extra sections and score chart, live.py the
Live page (SSE) and dead-letter Replay, audit.py the Audit page.
"""

from router.admin.console.pages import Console, add_console_routes

__all__ = ["Console", "add_console_routes"]
