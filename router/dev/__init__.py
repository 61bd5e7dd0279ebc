"""Dev-only tooling: ``leadrouter dev``, demo traffic, local Slack/SMTP receivers and server launchers.

Nothing in the service's runtime (collector, worker, admin) imports this package;
it needs the ``local`` extra (the embedded broker and the SMTP receiver).
"""
