//! `compare produce`: the same keyless produce workload through each client, rounds alternating.
//!
//! Every client: acks=all, idempotence on, linger 5 ms, the chosen compression, its own
//! default batch size. Latency is from the call that hands a record to the client to the
//! moment the application learns it was acknowledged.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flumen_client::producer::{Producer, ProducerConfig, ProducerRecord};
use hdrhistogram::Histogram;

use super::{
    Broker, ClientKind, ClientResult, ProduceArgs, RoundResult, Tally, cpu_time, new_histogram,
};

/// Runs the produce comparison; one result per client.
pub fn run(args: &ProduceArgs, broker: &Broker) -> Result<Vec<ClientResult>, String> {
    // A multi-thread runtime only for rskafka, which is written for one; Flumen runs on a
    // current-thread runtime, as it would inside a thread-per-core worker.
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let payload = super::payload(args.record_size);
    let mut tallies: Vec<Tally> = args.clients.iter().map(|c| Tally::new(*c)).collect();
    for round in 0..args.rounds {
        for tally in &mut tallies {
            let client = tally_client(tally);
            let topic = current
                .block_on(broker.create_topic(&format!("compare-{client}"), args.partitions))?;
            let result = match client {
                ClientKind::Flumen => current.block_on(flumen(args, broker, &topic, &payload)),
                ClientKind::Rdkafka => rdkafka(args, broker, &topic, &payload),
                ClientKind::Rskafka => multi.block_on(rskafka(args, broker, &topic, &payload)),
            }
            .map_err(|e| format!("{client} round {round}: {e}"))?;
            eprintln!(
                "round {round} {client}: {:.0} records/s, cpu {:.2}s",
                result.records as f64 / result.elapsed.as_secs_f64(),
                result.cpu.as_secs_f64()
            );
            tally.add(&result);
        }
    }
    Ok(tallies.iter().map(Tally::result).collect())
}

fn tally_client(tally: &Tally) -> ClientKind {
    tally.client
}

fn compression_or_none(args: &ProduceArgs) -> &str {
    if args.compression.is_empty() {
        "none"
    } else {
        &args.compression
    }
}

async fn flumen(
    args: &ProduceArgs,
    broker: &Broker,
    topic: &str,
    payload: &[u8],
) -> Result<RoundResult, String> {
    let mut props = vec![
        ("bootstrap.servers", broker.bootstrap.clone()),
        ("acks", "all".to_owned()),
        ("linger.ms", "5".to_owned()),
        ("enable.idempotence", "true".to_owned()),
        ("compression.type", compression_or_none(args).to_owned()),
    ];
    if let Some(size) = args.batch_size {
        props.push(("batch.size", size.to_string()));
    }
    let config = ProducerConfig::from_properties(props).map_err(|e| e.to_string())?;
    let producer = Producer::connect(config).await.map_err(|e| e.to_string())?;
    // Warm the metadata outside the measured time, as the other clients do at creation.
    producer
        .partitions_for(topic)
        .await
        .map_err(|e| e.to_string())?;
    let mut latency = new_histogram();
    let mut pending = VecDeque::new();
    let cpu0 = cpu_time();
    let start = Instant::now();
    for _ in 0..args.records {
        let sent = Instant::now();
        let delivery = producer
            .send(ProducerRecord::new(topic).value(payload))
            .await
            .map_err(|e| e.to_string())?;
        pending.push_back((sent, delivery));
        while let Some((sent, front)) = pending.front() {
            match front.try_result() {
                None => break,
                Some(Err(e)) => return Err(e.to_string()),
                Some(Ok(_)) => {
                    record(&mut latency, sent.elapsed());
                    pending.pop_front();
                }
            }
        }
    }
    while let Some((sent, delivery)) = pending.pop_front() {
        delivery.await.map_err(|e| e.to_string())?;
        record(&mut latency, sent.elapsed());
    }
    let elapsed = start.elapsed();
    let cpu = cpu_time() - cpu0;
    producer
        .close(Duration::from_secs(10))
        .await
        .map_err(|e| e.to_string())?;
    Ok(RoundResult {
        records: args.records,
        bytes: args.records * payload.len() as u64,
        elapsed,
        cpu,
        latency_us: latency,
    })
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    let _ = h.record((d.as_micros() as u64).max(1));
}

mod rd {
    //! The rdkafka delivery callback: latency from the enqueue time carried as the opaque.
    use super::*;
    use rdkafka::ClientContext;
    use rdkafka::producer::{DeliveryResult, ProducerContext};

    pub struct Ctx {
        pub start: Instant,
        pub latency: Mutex<Histogram<u64>>,
        pub errors: Mutex<Option<String>>,
    }

    impl ClientContext for Ctx {}

    impl ProducerContext for Ctx {
        type DeliveryOpaque = usize;
        fn delivery(&self, result: &DeliveryResult<'_>, sent_ns: usize) {
            let now = self.start.elapsed().as_nanos() as u64;
            match result {
                Ok(_) => {
                    let us = now.saturating_sub(sent_ns as u64) / 1000;
                    if let Ok(mut h) = self.latency.lock() {
                        let _ = h.record(us.max(1));
                    }
                }
                Err((e, _)) => {
                    if let Ok(mut slot) = self.errors.lock() {
                        slot.get_or_insert_with(|| e.to_string());
                    }
                }
            }
        }
    }
}

fn rdkafka(
    args: &ProduceArgs,
    broker: &Broker,
    topic: &str,
    payload: &[u8],
) -> Result<RoundResult, String> {
    use rdkafka::config::ClientConfig as RdConfig;
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    use rdkafka::producer::{BaseRecord, Producer as _, ThreadedProducer};

    let ctx = rd::Ctx {
        start: Instant::now(),
        latency: Mutex::new(new_histogram()),
        errors: Mutex::new(None),
    };
    let mut config = RdConfig::new();
    config
        .set("bootstrap.servers", &broker.bootstrap)
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("enable.idempotence", "true")
        .set("compression.type", compression_or_none(args));
    if let Some(size) = args.batch_size {
        config.set("batch.size", size.to_string());
    }
    let producer: ThreadedProducer<rd::Ctx> =
        config.create_with_context(ctx).map_err(|e| e.to_string())?;
    // Metadata for the topic before the clock starts.
    producer
        .client()
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    let cpu0 = cpu_time();
    let start = Instant::now();
    for _ in 0..args.records {
        let sent = producer.context().start.elapsed().as_nanos() as usize;
        let mut record: BaseRecord<'_, (), [u8], usize> =
            BaseRecord::with_opaque_to(topic, sent).payload(payload);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err((e, _)) => return Err(e.to_string()),
            }
        }
    }
    producer
        .flush(Duration::from_secs(120))
        .map_err(|e| e.to_string())?;
    let elapsed = start.elapsed();
    let cpu = cpu_time() - cpu0;
    if let Some(e) = producer
        .context()
        .errors
        .lock()
        .map_err(|e| e.to_string())?
        .take()
    {
        return Err(e);
    }
    let latency = producer
        .context()
        .latency
        .lock()
        .map_err(|e| e.to_string())?
        .clone();
    Ok(RoundResult {
        records: args.records,
        bytes: args.records * payload.len() as u64,
        elapsed,
        cpu,
        latency_us: latency,
    })
}

async fn rskafka(
    args: &ProduceArgs,
    broker: &Broker,
    topic: &str,
    payload: &[u8],
) -> Result<RoundResult, String> {
    use futures::StreamExt;
    use futures::stream::FuturesUnordered;
    use rskafka::client::ClientBuilder;
    use rskafka::client::partition::{Compression, UnknownTopicHandling};
    use rskafka::client::producer::BatchProducerBuilder;
    use rskafka::client::producer::aggregator::RecordAggregator;
    use rskafka::record::Record;

    let compression = match compression_or_none(args) {
        "none" => Compression::NoCompression,
        other => {
            return Err(format!(
                "rskafka comparison runs without compression, not {other}"
            ));
        }
    };
    let client = ClientBuilder::new(broker.bootstrap.split(',').map(str::to_owned).collect())
        .build()
        .await
        .map_err(|e| e.to_string())?;
    let mut producers = Vec::new();
    for p in 0..args.partitions {
        let pc = client
            .partition_client(topic, p, UnknownTopicHandling::Retry)
            .await
            .map_err(|e| e.to_string())?;
        producers.push(Arc::new(
            BatchProducerBuilder::new(Arc::new(pc))
                .with_linger(Duration::from_millis(5))
                .with_compression(compression)
                .build(RecordAggregator::new(args.batch_size.unwrap_or(16 * 1024))),
        ));
    }
    // rskafka has no buffer bound of its own: cap records in flight like the others' queues.
    const WINDOW: usize = 100_000;
    let mut latency = new_histogram();
    let mut in_flight = FuturesUnordered::new();
    let cpu0 = cpu_time();
    let start = Instant::now();
    for i in 0..args.records {
        if in_flight.len() >= WINDOW {
            match in_flight.next().await {
                Some(Ok(d)) => record(&mut latency, d),
                Some(Err(e)) => return Err(e),
                None => {}
            }
        }
        let producer = producers[(i % producers.len() as u64) as usize].clone();
        let rec = Record {
            key: None,
            value: Some(payload.to_vec()),
            headers: Default::default(),
            timestamp: chrono::Utc::now(),
        };
        let sent = Instant::now();
        in_flight.push(async move {
            producer.produce(rec).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(sent.elapsed())
        });
    }
    while let Some(r) = in_flight.next().await {
        record(&mut latency, r?);
    }
    let elapsed = start.elapsed();
    let cpu = cpu_time() - cpu0;
    Ok(RoundResult {
        records: args.records,
        bytes: args.records * payload.len() as u64,
        elapsed,
        cpu,
        latency_us: latency,
    })
}
