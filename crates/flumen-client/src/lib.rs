//! Async Kafka client: connections, cluster metadata, producer, consumer and admin.
#![warn(missing_docs)]
