"""The beacon collector: validates and enriches player beacons and writes them to Kafka."""
