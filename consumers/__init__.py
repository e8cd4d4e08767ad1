"""The Kafka edge of driftline: decoding, consumer loop, service wiring, HTTP, CLI."""
