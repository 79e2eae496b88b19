"""The query API: Livepeer-compatible metrics served from Redis."""
