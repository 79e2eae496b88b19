"""The aggregation engine: beacons become view sessions and rollups, materialized into Redis."""
