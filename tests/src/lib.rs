//! Integration tests for Flumen against a real Apache Kafka broker (see `tests/tests/`).
