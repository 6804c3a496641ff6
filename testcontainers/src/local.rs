//! Brokers as local JVM processes (`java -cp <kafka jars> kafka.Kafka server.properties`).

use std::fs::OpenOptions;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::thread;
use std::time::{Duration, Instant};

use crate::brokers::{Action, BrokerProcesses};
use crate::command;
use crate::error::{Error, Result};
use crate::jvm::Jvm;
use crate::layout::Layout;
use crate::process;

/// JVM options of a broker: a small heap, a collector that suits it, and the C1 compiler
/// only, which starts a broker in roughly 60 % of the time on a busy 2-core machine (the
/// C2 compiler threads compete with the broker's own start-up for the CPU). Peak broker
/// throughput is lower with C1 only: benchmarks that need the broker's best should set
/// `FLUMEN_KAFKA_JVM_OPTS` (whitespace-separated; replaces these options), e.g. to
/// `-Xmx1g -XX:+UseG1GC`.
const BROKER_JVM_OPTS: &[&str] = &[
    "-Xms128m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:-UsePerfData",
    "-Djava.awt.headless=true",
];

/// JVM options of a broker in a cluster for benchmarks: those of Kafka's own start scripts
/// (`kafka-server-start.sh` heap, `kafka-run-class.sh` performance options).
const PRODUCTION_BROKER_JVM_OPTS: &[&str] = &[
    "-Xms1g",
    "-Xmx1g",
    "-server",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
];

/// Replaces [`BROKER_JVM_OPTS`] (and [`PRODUCTION_BROKER_JVM_OPTS`]) when set.
pub(crate) const ENV_JVM_OPTS: &str = "FLUMEN_KAFKA_JVM_OPTS";

/// JVM options of short-lived tools (storage format, console tools): start fast.
const TOOL_JVM_OPTS: &[&str] = &[
    "-Xmx256m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:-UsePerfData",
    "-Djava.awt.headless=true",
];

/// The brokers of one cluster, each a child JVM.
pub(crate) struct JvmBrokers {
    jvm: Jvm,
    broker_opts: &'static [&'static str],
    children: Vec<Mutex<Option<Child>>>,
}

impl JvmBrokers {
    pub(crate) fn new(jvm: Jvm, brokers: usize, production_jvm: bool) -> Self {
        JvmBrokers {
            jvm,
            broker_opts: if production_jvm {
                PRODUCTION_BROKER_JVM_OPTS
            } else {
                BROKER_JVM_OPTS
            },
            children: (0..brokers).map(|_| Mutex::new(None)).collect(),
        }
    }

    fn slot(&self, n: usize) -> Result<MutexGuard<'_, Option<Child>>> {
        let slot = self
            .children
            .get(n)
            .ok_or_else(|| Error::InvalidArgument(format!("no broker {n}")))?;
        Ok(slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// `java <options> -Dlog4j2... -cp <jars>`; a broker's options give way to
    /// `FLUMEN_KAFKA_JVM_OPTS`.
    fn java(&self, broker: bool, log4j: &std::path::Path) -> Command {
        let mut cmd = Command::new(&self.jvm.java);
        match std::env::var(ENV_JVM_OPTS) {
            Ok(custom) if broker && !custom.trim().is_empty() => {
                cmd.args(custom.split_whitespace());
            }
            _ => {
                cmd.args(if broker {
                    self.broker_opts
                } else {
                    TOOL_JVM_OPTS
                });
            }
        }
        cmd.arg(format!("-Dlog4j2.configurationFile={}", log4j.display()))
            .arg("-cp")
            .arg(&self.jvm.classpath);
        cmd
    }
}

impl BrokerProcesses for JvmBrokers {
    fn kind(&self) -> &'static str {
        "local JVM"
    }

    fn prepare(&self, layout: &Layout) -> Result<()> {
        // Format all nodes in parallel: each is a JVM start of a second or two.
        let scram = layout.scram_args();
        let features = layout.feature_args();
        let handles: Vec<_> = (0..layout.ports.len())
            .map(|n| {
                let mut cmd = self.java(false, &layout.tools_log4j_path());
                cmd.args(["kafka.tools.StorageTool", "format", "--config"])
                    .arg(layout.config_path(n))
                    .args(["--cluster-id", &layout.cluster_id]);
                for s in &scram {
                    cmd.args(["--add-scram", s]);
                }
                for f in &features {
                    cmd.args(["--feature", f]);
                }
                thread::spawn(move || {
                    command::run_ok(
                        cmd,
                        Duration::from_secs(120),
                        &format!("kafka StorageTool format (broker {n})"),
                    )
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| {
                Error::io(
                    "formatting storage",
                    std::io::Error::other("format thread panicked"),
                )
            })??;
        }
        Ok(())
    }

    fn launch(&self, layout: &Layout, n: usize) -> Result<()> {
        let mut slot = self.slot(n)?;
        if let Some(child) = slot.as_mut() {
            if matches!(child.try_wait(), Ok(None)) {
                return Err(Error::InvalidArgument(format!(
                    "broker {n} is already running"
                )));
            }
        }
        let stdout_path = layout.stdout_path(n);
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stdout_path)
            .map_err(|e| Error::io(format!("opening {}", stdout_path.display()), e))?;
        let err = out
            .try_clone()
            .map_err(|e| Error::io("duplicating a log handle", e))?;
        let mut cmd = self.java(true, &layout.log4j_path(n));
        cmd.arg("kafka.Kafka")
            .arg(layout.config_path(n))
            .current_dir(layout.broker_dir(n))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = process::spawn(cmd).map_err(|e| {
            Error::io(
                format!("starting broker {n} ({})", self.jvm.java.display()),
                e,
            )
        })?;
        *slot = Some(child);
        Ok(())
    }

    fn stop(&self, n: usize, timeout: Duration) -> Result<()> {
        let mut slot = self.slot(n)?;
        let Some(child) = slot.as_mut() else {
            return Ok(());
        };
        if matches!(child.try_wait(), Ok(Some(_))) {
            return Ok(());
        }
        // A paused JVM would never handle SIGTERM.
        process::signal(child.id(), libc::SIGCONT)
            .map_err(|e| Error::io(format!("resuming broker {n}"), e))?;
        process::signal(child.id(), libc::SIGTERM)
            .map_err(|e| Error::io(format!("stopping broker {n}"), e))?;
        let deadline = Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Ok(());
                }
                Ok(None) => thread::sleep(Duration::from_millis(50)),
                Err(e) => return Err(Error::io(format!("waiting for broker {n}"), e)),
            }
        }
    }

    fn act(&self, n: usize, action: Action) -> Result<()> {
        let mut slot = self.slot(n)?;
        let Some(child) = slot.as_mut() else {
            return Err(Error::InvalidArgument(format!(
                "broker {n} was never started"
            )));
        };
        if matches!(child.try_wait(), Ok(Some(_))) {
            return match action {
                Action::Kill => Ok(()),
                _ => Err(Error::InvalidArgument(format!("broker {n} is not running"))),
            };
        }
        let sig = match action {
            Action::Kill => libc::SIGKILL,
            Action::Pause => libc::SIGSTOP,
            Action::Resume => libc::SIGCONT,
        };
        process::signal(child.id(), sig)
            .map_err(|e| Error::io(format!("signalling broker {n}"), e))?;
        if action == Action::Kill {
            child
                .wait()
                .map_err(|e| Error::io(format!("reaping broker {n}"), e))?;
        }
        Ok(())
    }

    fn exited(&self, n: usize) -> Option<String> {
        let mut slot = self.slot(n).ok()?;
        match slot.as_mut()?.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            _ => None,
        }
    }

    fn shutdown(&self, blocking: bool) {
        for slot in &self.children {
            let guard = if blocking {
                Some(slot.lock().unwrap_or_else(|p| p.into_inner()))
            } else {
                match slot.try_lock() {
                    Ok(g) => Some(g),
                    Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
                    // Held by a thread mid-operation: PR_SET_PDEATHSIG still kills this JVM
                    // when the process is gone.
                    Err(TryLockError::WouldBlock) => None,
                }
            };
            if let Some(mut guard) = guard {
                if let Some(mut child) = guard.take() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
    }

    fn classpath(&self) -> Option<&str> {
        Some(&self.jvm.classpath)
    }

    fn run_java_tool(
        &self,
        layout: &Layout,
        main_class: &str,
        args: &[&str],
        stdin: Option<&[u8]>,
    ) -> Result<Output> {
        let mut cmd = self.java(false, &layout.tools_log4j_path());
        cmd.arg(main_class).args(args);
        command::run(cmd, stdin, Duration::from_secs(180), main_class)
    }
}
