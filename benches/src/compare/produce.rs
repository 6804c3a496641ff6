//! `compare produce`: the same keyless produce workload through each client, rounds alternating.
//!
//! Every client runs with the same settings ([`settings`]): acks=all, idempotence on,
//! linger 5 ms, at most 5 requests in flight per connection, the chosen compression and the
//! same batch size. Latency is from the call that hands a record to the client to the moment
//! the application learns it was acknowledged, measured on one record in `--latency-sample`
//! (the same records for every client) so that the harness's clock reads stay off the CPU
//! figure.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flumen_client::producer::{Producer, ProducerConfig, ProducerRecord};
use hdrhistogram::Histogram;

use super::{
    Broker, ClientKind, ClientResult, ProduceArgs, ProduceSettings, RoundResult, Tally, cpu_time,
    new_histogram,
};

/// `max.in.flight.requests.per.connection` for every client: the most idempotence allows.
const MAX_IN_FLIGHT: u32 = 5;
/// `linger.ms` for every client.
const LINGER_MS: u64 = 5;

/// The settings every client runs with.
pub fn settings(args: &ProduceArgs) -> ProduceSettings {
    ProduceSettings {
        acks: "all",
        idempotence: true,
        linger_ms: LINGER_MS,
        batch_size: args.batch_size,
        max_in_flight: MAX_IN_FLIGHT,
        compression: compression_or_none(args).to_owned(),
        latency_sample: args.latency_sample.max(1),
    }
}

/// Rounds run before the measured ones, each client once, results dropped.
const WARMUP_ROUNDS: u32 = 1;

/// Whether record `i` is one whose latency is measured.
fn sampled(args: &ProduceArgs, i: u64) -> bool {
    i % args.latency_sample.max(1) == 0
}

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
    // One unmeasured round first: a broker fresh from start runs interpreted and C1 code
    // until its JIT has compiled the produce path, which would slow whichever client went
    // first. Then the order alternates between rounds, so none always goes first.
    for round in 0..WARMUP_ROUNDS + args.rounds {
        let measured = round >= WARMUP_ROUNDS;
        let mut order: Vec<usize> = (0..tallies.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let tally = &mut tallies[i];
            let client = tally_client(tally);
            let topic = current
                .block_on(broker.create_topic(&format!("compare-{client}"), args.partitions))?;
            let result = match client {
                ClientKind::Flumen => current.block_on(flumen(args, broker, &topic, &payload)),
                ClientKind::FlumenFutures => {
                    current.block_on(flumen_futures(args, broker, &topic, &payload))
                }
                ClientKind::Rdkafka => rdkafka(args, broker, &topic, &payload),
                ClientKind::RdkafkaFutures => {
                    current.block_on(rdkafka_futures(args, broker, &topic, &payload))
                }
                ClientKind::Rskafka => multi.block_on(rskafka(args, broker, &topic, &payload)),
            }
            .map_err(|e| format!("{client} round {round}: {e}"))?;
            current.block_on(broker.delete_topic(&topic));
            let label = if measured {
                format!("round {}", round - WARMUP_ROUNDS)
            } else {
                "warm-up".to_owned()
            };
            eprintln!(
                "{label} {client}: {:.0} records/s, cpu {:.2}s",
                result.records as f64 / result.elapsed.as_secs_f64(),
                result.cpu.as_secs_f64()
            );
            if measured {
                tally.add(&result);
            }
        }
    }
    let settings = settings(args);
    Ok(tallies
        .iter()
        .map(|t| ClientResult {
            settings: Some(settings.clone()),
            ..t.result()
        })
        .collect())
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

/// Flumen's producer, as every client here is set up.
async fn flumen_producer(
    args: &ProduceArgs,
    broker: &Broker,
    topic: &str,
) -> Result<Producer, String> {
    let props = [
        ("bootstrap.servers", broker.bootstrap.clone()),
        ("acks", "all".to_owned()),
        ("linger.ms", LINGER_MS.to_string()),
        ("enable.idempotence", "true".to_owned()),
        ("compression.type", compression_or_none(args).to_owned()),
        ("batch.size", args.batch_size.to_string()),
        (
            "max.in.flight.requests.per.connection",
            MAX_IN_FLIGHT.to_string(),
        ),
    ];
    let config = ProducerConfig::from_properties(props).map_err(|e| e.to_string())?;
    let producer = Producer::connect(config).await.map_err(|e| e.to_string())?;
    // Warm the metadata outside the measured time, as the other clients do at creation.
    producer
        .partitions_for(topic)
        .await
        .map_err(|e| e.to_string())?;
    Ok(producer)
}

/// Flumen, the application keeping its futures in order and looking at the oldest.
async fn flumen(
    args: &ProduceArgs,
    broker: &Broker,
    topic: &str,
    payload: &[u8],
) -> Result<RoundResult, String> {
    let producer = flumen_producer(args, broker, topic).await?;
    let mut latency = new_histogram();
    let mut pending = VecDeque::new();
    let cpu0 = cpu_time();
    let start = Instant::now();
    for i in 0..args.records {
        let sent = sampled(args, i).then(Instant::now);
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
                    if let Some(sent) = sent {
                        record(&mut latency, sent.elapsed());
                    }
                    pending.pop_front();
                }
            }
        }
    }
    while let Some((sent, delivery)) = pending.pop_front() {
        delivery.await.map_err(|e| e.to_string())?;
        if let Some(sent) = sent {
            record(&mut latency, sent.elapsed());
        }
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

/// Flumen, every record's future awaited from its own task in a `FuturesUnordered` (how
/// rust-rdkafka's `FutureProducer` is used, and what `flumen bench produce` does).
async fn flumen_futures(
    args: &ProduceArgs,
    broker: &Broker,
    topic: &str,
    payload: &[u8],
) -> Result<RoundResult, String> {
    use futures::TryFutureExt;

    let producer = flumen_producer(args, broker, topic).await?;
    let mut awaited = Awaited::new();
    let cpu0 = cpu_time();
    let start = Instant::now();
    for i in 0..args.records {
        let sent = sampled(args, i).then(Instant::now);
        let delivery = producer
            .send(ProducerRecord::new(topic).value(payload))
            .await
            .map_err(|e| e.to_string())?;
        awaited.push(delivery.map_ok(move |_| sent).map_err(|e| e.to_string()))?;
    }
    let latency = awaited.all().await?;
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

/// Every record's future, each awaited from its own task in a `FuturesUnordered`; each
/// resolves to its send time if its latency is sampled.
struct Awaited<Fut> {
    pending: futures::stream::FuturesUnordered<Fut>,
    latency: Histogram<u64>,
}

impl<Fut: std::future::Future<Output = Result<Option<Instant>, String>>> Awaited<Fut> {
    fn new() -> Self {
        Awaited {
            pending: futures::stream::FuturesUnordered::new(),
            latency: new_histogram(),
        }
    }

    fn finished(&mut self, result: Result<Option<Instant>, String>) -> Result<(), String> {
        if let Some(sent) = result? {
            record(&mut self.latency, sent.elapsed());
        }
        Ok(())
    }

    /// Adds `future`, then collects what is done without waiting, as an application's
    /// select loop would.
    fn push(&mut self, future: Fut) -> Result<(), String> {
        use futures::{FutureExt, StreamExt};
        self.pending.push(future);
        while let Some(Some(result)) = self.pending.next().now_or_never() {
            self.finished(result)?;
        }
        Ok(())
    }

    /// Waits for one future; false if none is left.
    async fn one(&mut self) -> Result<bool, String> {
        use futures::StreamExt;
        match self.pending.next().await {
            Some(result) => self.finished(result).map(|()| true),
            None => Ok(false),
        }
    }

    /// Waits for all; the latency histogram.
    async fn all(mut self) -> Result<Histogram<u64>, String> {
        while self.one().await? {}
        Ok(self.latency)
    }
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    let _ = h.record((d.as_micros() as u64).max(1));
}

mod rd {
    //! The rdkafka delivery callback: latency from the enqueue time carried as the opaque
    //! (0 for the records whose latency is not sampled).
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
            match result {
                Ok(_) if sent_ns == 0 => {}
                Ok(_) => {
                    let now = self.start.elapsed().as_nanos() as u64;
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

/// rust-rdkafka's producer settings: [`settings`] in librdkafka's names.
fn rd_config(args: &ProduceArgs, broker: &Broker) -> rdkafka::config::ClientConfig {
    let mut config = rdkafka::config::ClientConfig::new();
    config
        .set("bootstrap.servers", &broker.bootstrap)
        .set("acks", "all")
        .set("linger.ms", LINGER_MS.to_string())
        .set("enable.idempotence", "true")
        .set("compression.type", compression_or_none(args))
        .set("batch.size", args.batch_size.to_string())
        .set(
            "max.in.flight.requests.per.connection",
            MAX_IN_FLIGHT.to_string(),
        );
    config
}

/// rust-rdkafka's `FutureProducer`, used as `flumen-futures` uses Flumen: every record's
/// delivery future awaited from its own task in a `FuturesUnordered`. A full queue waits for
/// the next delivery (there is no `send` that waits for room without a timer).
async fn rdkafka_futures(
    args: &ProduceArgs,
    broker: &Broker,
    topic: &str,
    payload: &[u8],
) -> Result<RoundResult, String> {
    use futures::FutureExt;
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};

    let producer: FutureProducer = rd_config(args, broker)
        .create()
        .map_err(|e| e.to_string())?;
    producer
        .client()
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    let mut awaited = Awaited::new();
    let cpu0 = cpu_time();
    let start = Instant::now();
    for i in 0..args.records {
        let sent = sampled(args, i).then(Instant::now);
        let mut record = FutureRecord::<(), [u8]>::to(topic).payload(payload);
        let delivery = loop {
            match producer.send_result(record) {
                Ok(delivery) => break delivery,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    if !awaited.one().await? {
                        tokio::time::sleep(Duration::from_micros(200)).await;
                    }
                }
                Err((e, _)) => return Err(e.to_string()),
            }
        };
        awaited.push(delivery.map(move |r| match r {
            Ok(Ok(_)) => Ok(sent),
            Ok(Err((e, _))) => Err(e.to_string()),
            Err(_) => Err("delivery future canceled".to_owned()),
        }))?;
    }
    let latency = awaited.all().await?;
    let elapsed = start.elapsed();
    let cpu = cpu_time() - cpu0;
    producer
        .flush(Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    Ok(RoundResult {
        records: args.records,
        bytes: args.records * payload.len() as u64,
        elapsed,
        cpu,
        latency_us: latency,
    })
}

fn rdkafka(
    args: &ProduceArgs,
    broker: &Broker,
    topic: &str,
    payload: &[u8],
) -> Result<RoundResult, String> {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    use rdkafka::producer::{BaseRecord, Producer as _, ThreadedProducer};

    let ctx = rd::Ctx {
        start: Instant::now(),
        latency: Mutex::new(new_histogram()),
        errors: Mutex::new(None),
    };
    let producer: ThreadedProducer<rd::Ctx> = rd_config(args, broker)
        .create_with_context(ctx)
        .map_err(|e| e.to_string())?;
    // Metadata for the topic before the clock starts.
    producer
        .client()
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    let cpu0 = cpu_time();
    let start = Instant::now();
    for i in 0..args.records {
        // Never 0 for a sampled record: 0 means "not sampled".
        let sent = if sampled(args, i) {
            producer.context().start.elapsed().as_nanos() as usize + 1
        } else {
            0
        };
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
                .with_linger(Duration::from_millis(LINGER_MS))
                .with_compression(compression)
                .build(RecordAggregator::new(args.batch_size)),
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
                Some(Ok(Some(d))) => record(&mut latency, d),
                Some(Ok(None)) => {}
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
        let sent = sampled(args, i).then(Instant::now);
        in_flight.push(async move {
            producer.produce(rec).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(sent.map(|s| s.elapsed()))
        });
    }
    while let Some(r) = in_flight.next().await {
        if let Some(d) = r? {
            record(&mut latency, d);
        }
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
