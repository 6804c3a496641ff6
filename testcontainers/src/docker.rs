//! Brokers as Docker containers of the official `apache/kafka` image, driven by the `docker`
//! CLI (no Docker client library in every test build).
//!
//! The containers use the host network and mount the cluster's temp dir at the same path,
//! so they read the very `server.properties` the JVM path uses, listen on the same
//! 127.0.0.1 ports, and log into the same files: readiness and log tails work unchanged.
//! Host networking needs a Linux Docker engine.
//!
//! Orphans: a container does not die with the test process. Each one is labelled with the
//! owning host name and pid, and every new Docker cluster first removes the containers of
//! this host whose owner is gone (containers of other hosts sharing the engine are left alone).

use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::Duration;

use crate::brokers::{Action, BrokerProcesses};
use crate::command;
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::process::pid_alive;
use crate::version::KafkaVersion;

const OWNER_LABEL: &str = "flumen.owner";
const DOCKER_TIMEOUT: Duration = Duration::from_secs(300);

/// True when a Docker engine answers `docker info` within a few seconds.
pub(crate) fn available() -> bool {
    let mut cmd = Command::new("docker");
    cmd.args(["info", "--format", "{{.ServerVersion}}"]);
    matches!(command::run(cmd, None, Duration::from_secs(10), "docker info"), Ok(out) if out.status.success())
}

/// The image of the spec's Kafka release, overridable with `FLUMEN_KAFKA_IMAGE`.
fn image(version: KafkaVersion) -> String {
    std::env::var("FLUMEN_KAFKA_IMAGE")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("apache/kafka:{version}"))
}

/// The brokers of one cluster, each a container.
pub(crate) struct DockerBrokers {
    image: String,
    names: Vec<String>,
    created: Vec<Mutex<bool>>,
}

impl DockerBrokers {
    pub(crate) fn new(layout: &Layout) -> Result<Self> {
        remove_orphans();
        let image = image(layout.spec.kafka_version());
        // Pull up front so the first broker's readiness deadline is not spent downloading.
        let mut pull = Command::new("docker");
        pull.args(["pull", "--quiet", &image]);
        command::run_ok(pull, DOCKER_TIMEOUT, &format!("docker pull {image}"))?;
        let tag = layout
            .root
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let names = (0..layout.ports.len())
            .map(|n| format!("flumen-kafka-{tag}-{n}"))
            .collect();
        Ok(DockerBrokers {
            image,
            names,
            created: (0..layout.ports.len()).map(|_| Mutex::new(false)).collect(),
        })
    }

    fn name(&self, n: usize) -> Result<&str> {
        self.names
            .get(n)
            .map(String::as_str)
            .ok_or_else(|| Error::InvalidArgument(format!("no broker {n}")))
    }

    fn docker(&self, args: &[&str]) -> Result<Output> {
        let mut cmd = Command::new("docker");
        cmd.args(args);
        command::run_ok(cmd, DOCKER_TIMEOUT, &format!("docker {}", args.join(" ")))
    }
}

/// `'text'` for `sh -c`, with embedded single quotes escaped.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// This machine's host name (labels tell our containers from those of other hosts that
/// share the Docker engine, whose pids mean nothing here).
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown-host".to_owned();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// The owner label value of this process: `host:pid`.
fn owner() -> String {
    format!("{}:{}", host_name(), std::process::id())
}

fn remove_orphans() {
    let host = host_name();
    let mut cmd = Command::new("docker");
    cmd.args([
        "ps",
        "-a",
        "--filter",
        &format!("label={OWNER_LABEL}"),
        "--format",
        &format!("{{{{.ID}}}} {{{{.Label \"{OWNER_LABEL}\"}}}}"),
    ]);
    let Ok(out) = command::run(cmd, None, Duration::from_secs(30), "docker ps") else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut parts = line.split_whitespace();
        let (Some(id), Some(label)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Some((label_host, pid)) = label.rsplit_once(':') else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if label_host == host && !pid_alive(pid) {
            let mut rm = Command::new("docker");
            rm.args(["rm", "-f", id]);
            let _ = command::run(rm, None, Duration::from_secs(60), "docker rm");
        }
    }
}

impl BrokerProcesses for DockerBrokers {
    fn kind(&self) -> &'static str {
        "Docker"
    }

    fn prepare(&self, _layout: &Layout) -> Result<()> {
        // Formatting happens inside each container at its first start (`--ignore-formatted`
        // makes later `docker start`s skip it).
        Ok(())
    }

    fn launch(&self, layout: &Layout, n: usize) -> Result<()> {
        let name = self.name(n)?;
        let mut created = self
            .created
            .get(n)
            .ok_or_else(|| Error::InvalidArgument(format!("no broker {n}")))?
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if *created {
            self.docker(&["start", name])?;
            return Ok(());
        }
        let config = layout.config_path(n).display().to_string();
        let stdout = layout.stdout_path(n).display().to_string();
        let mut format = format!(
            "/opt/kafka/bin/kafka-storage.sh format --ignore-formatted --config {} --cluster-id {}",
            sh_quote(&config),
            sh_quote(&layout.cluster_id)
        );
        for s in layout.scram_args() {
            format.push_str(" --add-scram ");
            format.push_str(&sh_quote(&s));
        }
        for f in layout.feature_args() {
            format.push_str(" --feature ");
            format.push_str(&sh_quote(&f));
        }
        let script = format!(
            "{format} >> {out} 2>&1 && exec /opt/kafka/bin/kafka-server-start.sh {cfg} >> {out} 2>&1",
            out = sh_quote(&stdout),
            cfg = sh_quote(&config)
        );
        let root = layout.root.display().to_string();
        // SAFETY: getuid/getgid cannot fail.
        let user = unsafe { format!("{}:{}", libc::getuid(), libc::getgid()) };
        let label = format!("{OWNER_LABEL}={}", owner());
        let volume = format!("{root}:{root}");
        let log_dir = format!("LOG_DIR={}", layout.broker_dir(n).join("logs").display());
        let log4j = format!(
            "KAFKA_LOG4J_OPTS=-Dlog4j2.configurationFile={}",
            layout.log4j_path(n).display()
        );
        self.docker(&[
            "run",
            "-d",
            "--name",
            name,
            "--label",
            &label,
            "--network",
            "host",
            "--user",
            &user,
            "-v",
            &volume,
            "-e",
            &log_dir,
            "-e",
            &log4j,
            "-e",
            "KAFKA_HEAP_OPTS=-Xms128m -Xmx512m",
            "--entrypoint",
            "sh",
            &self.image,
            "-c",
            &script,
        ])?;
        *created = true;
        Ok(())
    }

    fn stop(&self, n: usize, timeout: Duration) -> Result<()> {
        let name = self.name(n)?;
        // A paused container cannot be stopped.
        let _ = self.docker(&["unpause", name]);
        self.docker(&["stop", "-t", &timeout.as_secs().to_string(), name])
            .map(|_| ())
    }

    fn act(&self, n: usize, action: Action) -> Result<()> {
        let name = self.name(n)?;
        let verb = match action {
            Action::Kill => "kill",
            Action::Pause => "pause",
            Action::Resume => "unpause",
        };
        self.docker(&[verb, name]).map(|_| ())
    }

    fn exited(&self, n: usize) -> Option<String> {
        let name = self.name(n).ok()?;
        let out = self
            .docker(&[
                "inspect",
                "-f",
                "{{.State.Status}} {{.State.ExitCode}}",
                name,
            ])
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if text.starts_with("exited") || text.starts_with("dead") {
            Some(format!("container {text}"))
        } else {
            None
        }
    }

    fn shutdown(&self, _blocking: bool) {
        let mut args = vec!["rm", "-f"];
        args.extend(self.names.iter().map(String::as_str));
        let _ = self.docker(&args);
    }

    fn classpath(&self) -> Option<&str> {
        None
    }

    fn run_java_tool(
        &self,
        layout: &Layout,
        main_class: &str,
        args: &[&str],
        stdin: Option<&[u8]>,
    ) -> Result<Output> {
        // A throw-away container of the same image; the temp dirs are mounted so that files
        // a test wrote there (client configs, the CA) are visible at the same paths.
        let root = layout.root.display().to_string();
        let tmp = std::env::temp_dir().display().to_string();
        let mut cmd = Command::new("docker");
        cmd.args([
            "run",
            "--rm",
            "-i",
            "--network",
            "host",
            "-v",
            &format!("{root}:{root}"),
            "-v",
            &format!("{tmp}:{tmp}"),
        ])
        .args([
            "--entrypoint",
            "java",
            &self.image,
            "-Xmx256m",
            "-cp",
            "/opt/kafka/libs/*",
            main_class,
        ])
        .args(args);
        command::run(cmd, stdin, DOCKER_TIMEOUT, main_class)
    }
}
