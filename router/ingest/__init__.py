"""The collector process: HTTP hits in, one event shape out, spooled durably and forwarded to Kafka.

``app`` serves the pixel, form, email open/click, Segment/RudderStack and
Snowplow endpoints; ``segment`` and ``snowplow`` decide what a request means;
``machine`` flags bots and mail scanners; ``spool`` keeps every accepted event
on disk until the forwarder has it in Kafka.
"""
