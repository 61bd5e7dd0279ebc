"""The admin process: the HTTP API (and pages) for ops staff and reps, with its auth and OpenAPI document."""
