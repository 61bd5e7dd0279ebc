"""The ops console: server-rendered pages on the admin app (``/console/``) for ops, reps and readonly users.

Plain HTML from Python strings with escaping (router/admin/console/html.py), no
script and no build toolchain: the pages work on a laptop and a phone as forms
and links.  Sign-in with an admin token makes a server-side session in Redis
(session.py); pages.py holds the pages.
"""

from router.admin.console.pages import Console, add_console_routes

__all__ = ["Console", "add_console_routes"]
