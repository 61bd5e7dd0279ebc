"""The one door to Redis and Kafka: client factory, keys, Lua scripts (``lua/``), lead store,
published rules, live config files and the model registry."""
