"""The worker process: events off Kafka, scored, resolved to a lead, applied to Redis, routed.

``app`` holds the thin faust agents; ``pipeline`` is what they call for a batch;
``identity`` and ``accounts`` decide who and which company; ``distribution``
picks the rep; ``sla``, ``lifecycle`` and ``privacy`` act on a lead over time.
"""
