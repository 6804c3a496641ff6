//! `compare pipeline --job word_count|visit_analytics`: the runtime's example programs, run
//! as a user runs them (bounded, `--exit-at-end`), over a pre-loaded input of their own kind,
//! with 1 and 2 workers. CPU time and peak RSS are the example process's (from `wait4`).
//!
//! There is no hand-written peer for windowed jobs here; the figures are the runtime's own:
//! input records per second, CPU seconds per million input records, peak RSS. With
//! `--engines flumen-run,flumen-runtime` the same job also runs from its pipeline file through
//! the `flumen` binary's `run` command, in the same rounds, against the Rust example; and
//! `flumen-runtime-disk` is the Rust example with its state on disk (`state.store=disk`, the
//! default 10 MiB cache per task and store), against the same in memory.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use flumen_client::producer::{Producer, ProducerConfig, ProducerRecord};
use flumen_runtime::testing::visits::VisitGen;
use flumen_testcontainers::KafkaCluster;

use super::Broker;
use super::pipeline::{EngineResult, PipelineArgs};

/// The program `name`, built (or brought up to date) under `cargo run`: an example of
/// `package` (`in_dir` = `examples`) or one of its binaries (`in_dir` = ``).
fn program(package: &str, kind: &str, name: &str, in_dir: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = exe.parent().ok_or("no directory of the running program")?;
    let release = dir.file_name().is_some_and(|d| d == "release");
    if let Ok(cargo) = std::env::var("CARGO") {
        let mut build = Command::new(cargo);
        build.args(["build", "--quiet", "-p", package, kind, name]);
        if release {
            build.arg("--release");
        }
        let status = build
            .status()
            .map_err(|e| format!("cannot run cargo to build {name}: {e}"))?;
        if !status.success() {
            return Err(format!("building {name} failed ({status})"));
        }
    }
    let path = dir.join(in_dir).join(name);
    if !path.exists() {
        return Err(format!(
            "{} is missing: build it with `cargo build --release -p {package} {kind} {name}`",
            path.display()
        ));
    }
    Ok(path)
}

/// The job's pipeline file.
fn pipeline_file(job: &str) -> PathBuf {
    [
        env!("CARGO_MANIFEST_DIR"),
        "..",
        "crates",
        "flumen-runtime",
        "examples",
        "pipelines",
        &format!("{job}.toml"),
    ]
    .iter()
    .collect()
}

/// Where the `-disk` engines keep their state (emptied before and after the runs).
fn state_dir() -> PathBuf {
    std::env::temp_dir().join("flumen-bench-state")
}

/// The command running `job` on `engine`, writing to `outputs` (stats, top, alerts, late for
/// visit_analytics; the counts for word_count).
fn command(
    engine: &str,
    job: &str,
    programs: &Programs,
    broker: &Broker,
    input: &str,
    outputs: &[String],
    workers: usize,
) -> Result<Command, String> {
    let app = KafkaCluster::unique_topic("job-app");
    let (engine, guarantee) = match engine.split_once("-exactly") {
        Some((e, g)) => (e, format!("exactly{g}")),
        None => (engine, "at_least_once".to_owned()),
    };
    let (engine, disk) = match engine.strip_suffix("-disk") {
        Some(e) => (e, true),
        None => (engine, false),
    };
    let mut cmd = command_for(engine, job, programs, broker, input, outputs, workers, &app)?;
    cmd.args(["--guarantee", &guarantee]);
    if disk {
        let dir = state_dir();
        cmd.args(["-X", "state.store=disk", "-X"])
            .arg(format!("state.dir={}", dir.display()));
    }
    Ok(cmd)
}

#[allow(clippy::too_many_arguments)]
fn command_for(
    engine: &str,
    job: &str,
    programs: &Programs,
    broker: &Broker,
    input: &str,
    outputs: &[String],
    workers: usize,
    app: &str,
) -> Result<Command, String> {
    match engine {
        "flumen-runtime" => {
            let mut cmd = Command::new(programs.example.as_ref().ok_or("no example program")?);
            cmd.args(["-b", &broker.bootstrap, "--input", input])
                .args(["--workers", &workers.to_string(), "--exit-at-end"])
                .args(["--application-id", app]);
            match job {
                "word_count" => cmd.args(["--output", &outputs[0]]),
                _ => cmd
                    .args(["--output-stats", &outputs[0], "--output-top", &outputs[1]])
                    .args(["--output-alerts", &outputs[2], "--output-late", &outputs[3]]),
            };
            Ok(cmd)
        }
        "flumen-run" => {
            let mut cmd = Command::new(programs.flumen.as_ref().ok_or("no flumen program")?);
            let set = |cmd: &mut Command, kv: String| {
                cmd.args(["--set", &kv]);
            };
            cmd.args(["-b", &broker.bootstrap, "run"])
                .arg(pipeline_file(job))
                .arg("--exit-at-end");
            set(&mut cmd, format!("source.topics={input}"));
            set(&mut cmd, format!("application_id={app}"));
            set(&mut cmd, format!("workers={workers}"));
            match job {
                "word_count" => set(&mut cmd, format!("sink.topic={}", outputs[0])),
                _ => {
                    set(&mut cmd, format!("steps.4.topic={}", outputs[0]));
                    set(&mut cmd, format!("sink.topic={}", outputs[1]));
                    set(&mut cmd, format!("steps.5.topic={}", outputs[2]));
                    set(&mut cmd, format!("late.topic={}", outputs[3]));
                }
            }
            Ok(cmd)
        }
        other => Err(format!(
            "unknown engine {other:?} for {job} (expected flumen-runtime or flumen-run)"
        )),
    }
}

/// The programs the engines run.
struct Programs {
    example: Option<PathBuf>,
    flumen: Option<PathBuf>,
}

/// Writes the job's input: text lines of about `record_size` bytes for `word_count`, JSON
/// visits for `visit_analytics`, timestamps over `records / 20,000` seconds of event time.
async fn fill(args: &PipelineArgs, broker: &Broker, topic: &str) -> Result<(), String> {
    let producer = Producer::connect(
        ProducerConfig::from_properties([
            ("bootstrap.servers", broker.bootstrap.as_str()),
            ("linger.ms", "5"),
            ("batch.size", "1000000"),
        ])
        .map_err(|e| e.to_string())?,
    )
    .await
    .map_err(|e| e.to_string())?;
    // An hour ago: the broker's retention goes by record timestamps.
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
        - 3_600_000;
    let mut value = Vec::new();
    let mut visits = VisitGen::new(7)
        .users(100_000)
        .url_count(1_000)
        .start_ms(start)
        .events_per_sec(20_000.0)
        .error_share(0.01)
        .out_of_order_ms(2_000)
        .visits();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for i in 0..args.records {
        value.clear();
        let ts = match args.job.as_str() {
            "word_count" => {
                // Words from a vocabulary of 10,000 (the same ones keep coming back).
                while value.len() + 12 < args.record_size {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    value.extend_from_slice(format!("w{} ", seed % 10_000).as_bytes());
                }
                start + (i as i64) / 20
            }
            _ => visits.next_json(&mut value).ts,
        };
        let mut record = ProducerRecord::new(topic).value(&value);
        record.timestamp = Some(ts);
        drop(producer.send(record).await.map_err(|e| e.to_string())?);
    }
    producer.flush().await.map_err(|e| e.to_string())?;
    if producer.failed_records() > 0 {
        return Err(format!(
            "{} input records failed",
            producer.failed_records()
        ));
    }
    Ok(())
}

/// Runs `program` to its end; its wall time, CPU time (user + system) and peak RSS (MB).
fn measure(program: &mut Command) -> Result<(Duration, Duration, f64), String> {
    let started = Instant::now();
    let mut child = program
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {program:?}: {e}"))?;
    let pid = i32::try_from(child.id()).map_err(|e| e.to_string())?;
    // Read stderr on the side: the child must not block on a full pipe.
    let mut stderr = child.stderr.take().ok_or("no stderr pipe")?;
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let mut status = 0;
    // SAFETY: wait4 writes the status and the rusage structs we own, for our own child
    // (reaped here: `child` is not waited for again).
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::wait4(pid, &mut status, 0, &mut usage) != pid {
            return Err(format!("waiting for {program:?} failed"));
        }
        usage
    };
    let wall = started.elapsed();
    let stderr = reader.join().unwrap_or_default();
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        return Err(format!("{program:?} failed (status {status}): {stderr}"));
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Ok((
        wall,
        tv(usage.ru_utime) + tv(usage.ru_stime),
        usage.ru_maxrss as f64 / 1024.0,
    ))
}

/// Runs the job on each engine with each worker count.
pub fn run(args: &PipelineArgs, broker: &Broker) -> Result<Vec<EngineResult>, String> {
    // Each engine under each guarantee: `<engine>` at-least-once, `<engine>-exactly_once`.
    let engines: Vec<String> = args
        .engines
        .iter()
        .flat_map(|e| {
            args.guarantees.iter().map(move |g| match g.as_str() {
                "at_least_once" => e.clone(),
                other => format!("{e}-{other}"),
            })
        })
        .collect();
    let engines = &engines;
    let programs = Programs {
        example: engines
            .iter()
            .any(|e| e.starts_with("flumen-runtime"))
            .then(|| program("flumen-runtime", "--example", &args.job, "examples"))
            .transpose()?,
        flumen: engines
            .iter()
            .any(|e| e.starts_with("flumen-run") && !e.starts_with("flumen-runtime"))
            .then(|| program("flumen-cli", "--bin", "flumen", ""))
            .transpose()?,
    };
    let _ = std::fs::remove_dir_all(state_dir());
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let input = current.block_on(broker.create_topic("job-in", args.partitions))?;
    current.block_on(fill(args, broker, &input))?;
    let mut results = Vec::new();
    for &workers in &args.workers {
        // (seconds, cpu seconds per million, peak) summed per engine over the rounds.
        let mut sums = vec![(0.0f64, 0.0f64, 0.0f64); engines.len()];
        for round in 0..args.rounds {
            let mut order: Vec<usize> = (0..engines.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for i in order {
                let engine = &engines[i];
                let outputs: Vec<String> = (0..4)
                    .map(|_| current.block_on(broker.create_topic("job-out", args.partitions)))
                    .collect::<Result<_, _>>()?;
                let mut cmd = command(
                    engine, &args.job, &programs, broker, &input, &outputs, workers,
                )?;
                let (wall, used, rss) = measure(&mut cmd)?;
                eprintln!(
                    "round {round} {} {engine} x{workers}: {:.0} records/s, cpu {:.2} s/M, peak RSS {rss:.1} MB",
                    args.job,
                    args.records as f64 / wall.as_secs_f64(),
                    used.as_secs_f64() / (args.records as f64 / 1e6)
                );
                sums[i].0 += wall.as_secs_f64();
                sums[i].1 += used.as_secs_f64() / (args.records as f64 / 1e6);
                sums[i].2 = sums[i].2.max(rss);
                for t in &outputs {
                    current.block_on(broker.delete_topic(t));
                }
            }
        }
        for (engine, (secs, cpu, peak)) in engines.iter().zip(sums) {
            results.push(EngineResult {
                engine: engine.clone(),
                job: args.job.clone(),
                workers,
                records_per_s: args.records as f64 * f64::from(args.rounds) / secs,
                cpu_s_per_million: cpu / f64::from(args.rounds),
                peak_rss_mb: peak,
            });
        }
    }
    current.block_on(broker.delete_topic(&input));
    let _ = std::fs::remove_dir_all(state_dir());
    Ok(results)
}
