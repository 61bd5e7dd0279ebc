"""Reps' alerts: rendered (``render``), paced (``pacing``), delivered once per channel
(``notifiers``, ``sender``) or batched into a digest (``digest``)."""
