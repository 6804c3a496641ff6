//! Starts a real Apache Kafka cluster for tests, benches and the demo.
