//! `KafkaCluster`: provisioning (external, Docker, local JVM), readiness and fault control.

use std::path::Path;
use std::process::Output;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::brokers::{Action, BrokerProcesses};
use crate::error::{Error, Result};
use crate::external::External;
use crate::jvm::{Jvm, tail_lines};
use crate::layout::Layout;
use crate::local::JvmBrokers;
use crate::readiness::{self, POLL_INTERVAL, Transport};
use crate::spec::{ClusterSpec, SaslMechanism, SaslUser};
use crate::tempdir::TempRoot;
use crate::version::{KafkaVersion, OLDEST_SUPPORTED};
use crate::{docker, tls};

/// How long a broker may take to answer on every listener and join the cluster.
const READY_DEADLINE: Duration = Duration::from_secs(90);
/// How long an external cluster may take to answer.
const EXTERNAL_DEADLINE: Duration = Duration::from_secs(30);
/// How long `stop_broker` waits for a clean shutdown before killing.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// Lines of broker log put into a readiness error.
const LOG_TAIL_LINES: usize = 50;

/// Which provider to use; `FLUMEN_KAFKA_PROVIDER=jvm|docker` overrides the detection.
const ENV_PROVIDER: &str = "FLUMEN_KAFKA_PROVIDER";

/// A running Kafka cluster. Dropping it stops every broker and removes its files.
pub struct KafkaCluster {
    inner: Inner,
}

enum Inner {
    External(External),
    Managed(Managed),
}

/// What the harness believes a broker is doing (for "which brokers must be in Metadata").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BrokerState {
    Running,
    Paused,
    Down,
}

struct Managed {
    layout: Layout,
    procs: Box<dyn BrokerProcesses>,
    states: Mutex<Vec<BrokerState>>,
    tls_client: Option<std::sync::Arc<rustls::ClientConfig>>,
    root: TempRoot,
}

impl std::fmt::Debug for KafkaCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            Inner::External(e) => f
                .debug_struct("KafkaCluster")
                .field("external", &e.bootstrap)
                .finish(),
            Inner::Managed(m) => f
                .debug_struct("KafkaCluster")
                .field("provider", &m.procs.kind())
                .field("spec", &m.layout.spec)
                .field("root", &m.layout.root)
                .finish(),
        }
    }
}

impl KafkaCluster {
    /// Starts a cluster of the given shape and waits until every broker answers on every
    /// listener and has joined. With `FLUMEN_KAFKA_BOOTSTRAP` set, returns that external
    /// cluster instead (whatever `spec` asks).
    pub fn start(spec: ClusterSpec) -> Result<KafkaCluster> {
        if let Some(external) = External::from_env() {
            let external = external?;
            check_external(&external)?;
            return Ok(KafkaCluster {
                inner: Inner::External(external),
            });
        }
        let version = spec.kafka_version();
        if version < OLDEST_SUPPORTED {
            return Err(Error::InvalidArgument(format!(
                "Kafka {version} is not supported by the harness: the oldest is {OLDEST_SUPPORTED}"
            )));
        }
        let provider = std::env::var(ENV_PROVIDER).unwrap_or_default();
        match provider.as_str() {
            "docker" => Self::start_with_retries(spec, None),
            "jvm" => Self::start_with_retries(spec, Some(Jvm::locate(version)?)),
            "" if docker::available() => match Self::start_with_retries(spec, None) {
                Ok(cluster) => Ok(cluster),
                // A Docker engine that cannot run the image (no registry access, no host
                // networking, ...) should not stop the tests when a JDK could.
                Err(docker_err) => {
                    eprintln!(
                        "flumen-testcontainers: Docker failed ({docker_err}); trying a local JVM broker"
                    );
                    Self::start_with_retries(spec, Some(Jvm::locate(version)?))
                }
            },
            "" => Self::start_with_retries(spec, Some(Jvm::locate(version)?)),
            other => Err(Error::InvalidArgument(format!(
                "{ENV_PROVIDER}={other}: expected `jvm` or `docker`"
            ))),
        }
    }

    /// Starts with fresh ports up to three times while the failure is a port that another
    /// process took between our choosing it and the broker binding it.
    fn start_with_retries(spec: ClusterSpec, jvm: Option<Jvm>) -> Result<KafkaCluster> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::start_managed(spec, jvm.clone()) {
                Err(e) if attempt < 3 && e.is_port_clash() => continue,
                other => return other,
            }
        }
    }

    fn start_managed(spec: ClusterSpec, jvm: Option<Jvm>) -> Result<KafkaCluster> {
        let root = TempRoot::create()?;
        let layout = Layout::new(spec, root.path())?;
        layout.write_files()?;
        let procs: Box<dyn BrokerProcesses> = match jvm {
            Some(jvm) => Box::new(JvmBrokers::new(jvm, spec.brokers, spec.production_jvm)),
            None => Box::new(docker::DockerBrokers::new(&layout)?),
        };
        let tls_client = match &layout.tls {
            Some(t) => Some(tls::client_config(&t.ca_der)?),
            None => None,
        };
        let managed = Managed {
            states: Mutex::new(vec![BrokerState::Down; spec.brokers]),
            layout,
            procs,
            tls_client,
            root,
        };
        // From here on, dropping `cluster` cleans up whatever was started.
        let cluster = KafkaCluster {
            inner: Inner::Managed(managed),
        };
        let m = cluster.managed("start")?;
        m.procs.prepare(&m.layout)?;
        for n in 0..spec.brokers {
            m.procs.launch(&m.layout, n)?;
            m.set_state(n, BrokerState::Running);
        }
        let deadline = Instant::now() + READY_DEADLINE;
        for n in 0..spec.brokers {
            m.wait_ready(n, deadline)?;
        }
        Ok(cluster)
    }

    fn managed(&self, operation: &str) -> Result<&Managed> {
        match &self.inner {
            Inner::Managed(m) => Ok(m),
            Inner::External(_) => Err(Error::Unsupported {
                operation: operation.to_owned(),
                backend: "an external cluster (FLUMEN_KAFKA_BOOTSTRAP)",
            }),
        }
    }

    fn checked(&self, operation: &str, n: usize) -> Result<&Managed> {
        let m = self.managed(operation)?;
        if n >= m.layout.ports.len() {
            return Err(Error::InvalidArgument(format!(
                "{operation}: no broker {n} in a cluster of {}",
                m.layout.ports.len()
            )));
        }
        Ok(m)
    }

    /// The Apache Kafka release the brokers run (`None` for an external cluster: whatever it is).
    pub fn kafka_version(&self) -> Option<KafkaVersion> {
        match &self.inner {
            Inner::External(_) => None,
            Inner::Managed(m) => Some(m.layout.spec.kafka_version()),
        }
    }

    /// PLAINTEXT bootstrap addresses, comma-separated (`127.0.0.1:p1,127.0.0.1:p2`).
    pub fn bootstrap(&self) -> String {
        match &self.inner {
            Inner::External(e) => e.bootstrap.clone(),
            Inner::Managed(m) => join(m.layout.ports.iter().map(|p| Some(p.plaintext))),
        }
    }

    /// SASL_PLAINTEXT bootstrap addresses, when the cluster has that listener.
    pub fn sasl_bootstrap(&self) -> Option<String> {
        match &self.inner {
            Inner::External(e) => e.sasl_bootstrap.clone(),
            Inner::Managed(m) => m
                .layout
                .spec
                .sasl
                .then(|| join(m.layout.ports.iter().map(|p| p.sasl))),
        }
    }

    /// SSL bootstrap addresses, when the cluster has that listener.
    pub fn ssl_bootstrap(&self) -> Option<String> {
        match &self.inner {
            Inner::External(e) => e.ssl_bootstrap.clone(),
            Inner::Managed(m) => m
                .layout
                .spec
                .tls
                .then(|| join(m.layout.ports.iter().map(|p| p.ssl))),
        }
    }

    /// PEM file of the CA that signed the brokers' certificates (SSL listener only).
    pub fn ca_pem_path(&self) -> Option<&Path> {
        match &self.inner {
            Inner::External(e) => e.ca.as_deref(),
            Inner::Managed(m) => m.layout.tls.as_ref().map(|t| t.ca_pem.as_path()),
        }
    }

    /// The SASL users: one per mechanism (empty without a SASL listener).
    pub fn sasl_users(&self) -> &[SaslUser] {
        match &self.inner {
            Inner::External(e) => &e.users,
            Inner::Managed(m) => &m.layout.users,
        }
    }

    /// The SASL user created for mechanism `m`.
    pub fn sasl_user(&self, m: SaslMechanism) -> Option<&SaslUser> {
        self.sasl_users().iter().find(|u| u.mechanism == m)
    }

    /// Number of brokers (for an external cluster: number of bootstrap addresses).
    pub fn broker_count(&self) -> usize {
        match &self.inner {
            Inner::External(e) => e
                .bootstrap
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .count(),
            Inner::Managed(m) => m.layout.ports.len(),
        }
    }

    /// PLAINTEXT address of broker `n` (0-based). Panics if `n` is out of range.
    pub fn broker_address(&self, n: usize) -> String {
        match &self.inner {
            Inner::External(e) => e
                .bootstrap
                .split(',')
                .map(str::trim)
                .nth(n)
                .unwrap_or_else(|| {
                    panic!("no broker {n} in FLUMEN_KAFKA_BOOTSTRAP={}", e.bootstrap)
                })
                .to_owned(),
            Inner::Managed(m) => {
                let p = m.layout.ports.get(n).unwrap_or_else(|| {
                    panic!("no broker {n} in a cluster of {}", m.layout.ports.len())
                });
                format!("127.0.0.1:{}", p.plaintext)
            }
        }
    }

    /// Stops broker `n` cleanly (SIGTERM) and waits for it to exit.
    pub fn stop_broker(&self, n: usize) -> Result<()> {
        let m = self.checked("stop_broker", n)?;
        m.procs.stop(n, STOP_TIMEOUT)?;
        m.set_state(n, BrokerState::Down);
        Ok(())
    }

    /// Kills broker `n` (SIGKILL) and waits until the process is gone.
    pub fn kill_broker(&self, n: usize) -> Result<()> {
        let m = self.checked("kill_broker", n)?;
        m.procs.act(n, Action::Kill)?;
        m.set_state(n, BrokerState::Down);
        Ok(())
    }

    /// Starts broker `n` again (after a stop or kill) and waits until it is ready and has
    /// rejoined the cluster.
    pub fn start_broker(&self, n: usize) -> Result<()> {
        let m = self.checked("start_broker", n)?;
        m.procs.launch(&m.layout, n)?;
        m.set_state(n, BrokerState::Running);
        m.wait_ready(n, Instant::now() + READY_DEADLINE)
    }

    /// Freezes broker `n` (SIGSTOP): its sockets stay open but nothing answers.
    pub fn pause_broker(&self, n: usize) -> Result<()> {
        let m = self.checked("pause_broker", n)?;
        m.procs.act(n, Action::Pause)?;
        m.set_state(n, BrokerState::Paused);
        Ok(())
    }

    /// Thaws a paused broker `n` (SIGCONT).
    pub fn resume_broker(&self, n: usize) -> Result<()> {
        let m = self.checked("resume_broker", n)?;
        m.procs.act(n, Action::Resume)?;
        m.set_state(n, BrokerState::Running);
        Ok(())
    }

    /// A topic name unique within this process run: `{prefix}-{pid}-{counter}`.
    pub fn unique_topic(prefix: &str) -> String {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        format!(
            "{prefix}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Classpath of the Kafka jars (for running Kafka's own Java tools in interop tests).
    /// `None` for an external or Docker cluster.
    pub fn kafka_classpath(&self) -> Option<&str> {
        match &self.inner {
            Inner::External(_) => None,
            Inner::Managed(m) => m.procs.classpath(),
        }
    }

    /// Runs a Kafka Java tool main class (e.g. `org.apache.kafka.tools.TopicCommand`) with
    /// the harness's JDK and the broker's jars, optionally feeding `stdin`; returns its
    /// output whatever its exit status (killed after 3 minutes).
    pub fn run_java_tool(
        &self,
        main_class: &str,
        args: &[&str],
        stdin: Option<&[u8]>,
    ) -> Result<Output> {
        let m = self.managed("run_java_tool")?;
        m.procs.run_java_tool(&m.layout, main_class, args, stdin)
    }

    /// The directory holding this cluster's configs, logs and data (`None` if external).
    pub fn work_dir(&self) -> Option<&Path> {
        match &self.inner {
            Inner::External(_) => None,
            Inner::Managed(m) => Some(m.root.path()),
        }
    }

    /// The last `lines` lines of broker `n`'s log (empty if unknown).
    pub fn broker_log_tail(&self, n: usize, lines: usize) -> String {
        match &self.inner {
            Inner::External(_) => String::new(),
            Inner::Managed(m) if n < m.layout.ports.len() => m.log_tail(n, lines),
            Inner::Managed(_) => String::new(),
        }
    }

    /// Kills the brokers and removes the files now, without waiting on locks another thread
    /// may hold. Used by the process-exit hook of the shared clusters.
    pub(crate) fn shutdown_at_exit(&self) {
        if let Inner::Managed(m) = &self.inner {
            m.procs.shutdown(false);
            m.root.remove();
        }
    }
}

impl Drop for Managed {
    fn drop(&mut self) {
        self.procs.shutdown(true);
        self.root.remove();
    }
}

impl Managed {
    fn set_state(&self, n: usize, state: BrokerState) {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = states.get_mut(n) {
            *s = state;
        }
    }

    /// Polls broker `n` until every listener answers ApiVersions and its Metadata lists
    /// every broker the harness has running (itself included), or the deadline passes.
    fn wait_ready(&self, n: usize, deadline: Instant) -> Result<()> {
        let p = self.layout.ports[n];
        let plaintext = format!("127.0.0.1:{}", p.plaintext);
        let mut listeners = vec![(plaintext.clone(), Transport::Plain, "PLAINTEXT")];
        if let Some(port) = p.sasl {
            listeners.push((
                format!("127.0.0.1:{port}"),
                Transport::Plain,
                "SASL_PLAINTEXT",
            ));
        }
        if let (Some(port), Some(cfg)) = (p.ssl, &self.tls_client) {
            listeners.push((
                format!("127.0.0.1:{port}"),
                Transport::Tls(cfg.clone()),
                "SSL",
            ));
        }
        let mut last = String::from("no probe ran");
        loop {
            if let Some(status) = self.procs.exited(n) {
                return Err(self.not_ready(
                    n,
                    format!("the broker process exited ({status}); last probe: {last}"),
                ));
            }
            match self.probe(n, &listeners, &plaintext) {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
            if Instant::now() >= deadline {
                return Err(self.not_ready(
                    n,
                    format!(
                        "not ready after {} s; last probe: {last}",
                        READY_DEADLINE.as_secs()
                    ),
                ));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    fn probe(
        &self,
        n: usize,
        listeners: &[(String, Transport, &str)],
        plaintext: &str,
    ) -> Result<(), String> {
        for (addr, transport, name) in listeners {
            readiness::api_versions(addr, transport)
                .map_err(|e| format!("{name} listener {addr}: {e}"))?;
        }
        let expected: Vec<i32> = {
            let states = self.states.lock().unwrap_or_else(|p| p.into_inner());
            states
                .iter()
                .enumerate()
                .filter(|&(i, s)| *s == BrokerState::Running || i == n)
                .filter_map(|(i, _)| i32::try_from(i).ok())
                .collect()
        };
        let seen = readiness::metadata_brokers(plaintext)
            .map_err(|e| format!("Metadata from {plaintext}: {e}"))?;
        match expected.iter().find(|id| !seen.contains(id)) {
            None => Ok(()),
            Some(missing) => Err(format!(
                "Metadata from broker {n} lists brokers {seen:?}, not yet broker {missing}"
            )),
        }
    }

    fn not_ready(&self, n: usize, reason: String) -> Error {
        Error::NotReady {
            broker: n,
            reason,
            log: self.layout.log_path(n),
            log_tail: self.log_tail(n, LOG_TAIL_LINES),
        }
    }

    fn log_tail(&self, n: usize, lines: usize) -> String {
        let log = std::fs::read_to_string(self.layout.log_path(n)).unwrap_or_default();
        let mut tail = tail_lines(&log, lines);
        let stdout = std::fs::read_to_string(self.layout.stdout_path(n)).unwrap_or_default();
        if !stdout.trim().is_empty() {
            tail.push_str(&format!(
                "\n--- last lines of {} ---\n{}",
                self.layout.stdout_path(n).display(),
                tail_lines(&stdout, 20)
            ));
        }
        tail
    }
}

/// Waits until one address of the external bootstrap list answers ApiVersions.
fn check_external(external: &External) -> Result<()> {
    let deadline = Instant::now() + EXTERNAL_DEADLINE;
    let addrs: Vec<&str> = external
        .bootstrap
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect();
    let mut last = String::from("the bootstrap list is empty");
    loop {
        for addr in &addrs {
            match readiness::api_versions(addr, &Transport::Plain) {
                Ok(()) => return Ok(()),
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
        if Instant::now() >= deadline || addrs.is_empty() {
            return Err(Error::ExternalUnreachable {
                bootstrap: external.bootstrap.clone(),
                reason: last,
            });
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

fn join(ports: impl Iterator<Item = Option<u16>>) -> String {
    ports
        .flatten()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",")
}
