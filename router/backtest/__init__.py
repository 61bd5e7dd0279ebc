"""Replaying history against candidate rules: lead sources, Kafka replay, reports and charts."""
