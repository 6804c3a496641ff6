//! Send and await every record's delivery future, against the real broker: the time per
//! record must not grow with `batch.size` (awaiting a future costs O(1) however many records
//! its batch holds).
//!
//! 1 M records of 100 bytes per iteration, acks=all, idempotent, linger 5 ms, 6 partitions,
//! every future awaited from its own task through `FuturesUnordered` (how rust-rdkafka's
//! `FutureProducer` is used), at `batch.size` 16 KiB, 256 KiB and 1 MiB. The broker is
//! `FLUMEN_KAFKA_BOOTSTRAP` or one the harness starts (production JVM settings). Each
//! iteration writes to a topic of its own, deleted after it, so a run leaves no 100 MB per
//! iteration behind on the broker's disk.

use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use flumen_benches::compare::{Broker, payload};
use flumen_client::producer::{Producer, ProducerConfig, ProducerRecord};
use futures::FutureExt;
use futures::stream::{FuturesUnordered, StreamExt};

const RECORDS: u64 = 1_000_000;
const RECORD_SIZE: usize = 100;
const PARTITIONS: i32 = 6;

/// Sends `RECORDS` records and awaits each one's future; panics on a failed record.
async fn send_and_await_all(producer: &Producer, topic: &str, value: &[u8]) {
    let mut pending = FuturesUnordered::new();
    for _ in 0..RECORDS {
        let delivery = producer
            .send(ProducerRecord::new(topic).value(value))
            .await
            .expect("buffered");
        pending.push(delivery);
        while let Some(Some(result)) = pending.next().now_or_never() {
            result.expect("delivered");
        }
    }
    while let Some(result) = pending.next().await {
        result.expect("delivered");
    }
}

fn produce_futures(c: &mut Criterion) {
    let broker = Broker::get().expect("a broker");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let value = payload(RECORD_SIZE);
    let mut g = c.benchmark_group("produce_await_every_future");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Elements(RECORDS));
    for (label, batch_size) in [
        ("16KiB", 16 << 10),
        ("256KiB", 256 << 10),
        ("1MiB", 1 << 20),
    ] {
        let config = ProducerConfig::from_properties([
            ("bootstrap.servers", broker.bootstrap.clone()),
            ("acks", "all".to_owned()),
            ("enable.idempotence", "true".to_owned()),
            ("linger.ms", "5".to_owned()),
            ("batch.size", batch_size.to_string()),
        ])
        .expect("config");
        let producer = rt.block_on(Producer::connect(config)).expect("producer");
        g.bench_function(format!("1M_records/batch_size_{label}"), |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    // A fresh topic per iteration, deleted after it (untimed): 100 MB per
                    // iteration would otherwise pile up on the broker's disk.
                    let topic = rt
                        .block_on(broker.create_topic("bench-futures", PARTITIONS))
                        .expect("topic");
                    rt.block_on(producer.partitions_for(&topic))
                        .expect("metadata");
                    let start = Instant::now();
                    rt.block_on(send_and_await_all(&producer, &topic, &value));
                    timed += start.elapsed();
                    rt.block_on(broker.delete_topic(&topic));
                }
                timed
            })
        });
        rt.block_on(producer.close(Duration::from_secs(10)))
            .expect("closed");
    }
    g.finish();
}

criterion_group!(benches, produce_futures);
criterion_main!(benches);
