//! The Java side of the local broker: finding a JDK 17+, and the Kafka jars resolved once by
//! Maven from the pinned `kafka/pom.xml` into a per-user cache.
//!
//! # Invariants
//! - The cache directory is only ever seen complete: Maven fills a private staging directory
//!   which is renamed into place, under an exclusive `flock`, so parallel test binaries
//!   resolving at the same moment neither race nor see half a classpath.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// The pom that pins the Kafka version; embedded so the binary works outside the source tree.
pub(crate) const POM: &str = include_str!("../kafka/pom.xml");

/// Name of the file that marks a finished cache directory (it holds the pom it came from).
const COMPLETE_MARKER: &str = ".flumen-complete";

/// The Kafka version pinned in the pom.
pub fn kafka_version() -> &'static str {
    let start = POM
        .find("<kafka.version>")
        .map(|i| i + "<kafka.version>".len());
    let end = POM.find("</kafka.version>");
    match (start, end) {
        (Some(s), Some(e)) if s < e => POM[s..e].trim(),
        _ => "unknown",
    }
}

/// A usable JDK and the classpath of the Kafka jars.
#[derive(Debug, Clone)]
pub(crate) struct Jvm {
    /// The `java` executable.
    pub java: PathBuf,
    /// `<cache>/libs/*`, a classpath wildcard over every resolved jar.
    pub classpath: String,
}

impl Jvm {
    /// Finds Java 17+ and makes sure the Kafka jars are in the cache (running Maven once).
    pub(crate) fn locate() -> Result<Jvm> {
        let java = find_java()?;
        let dir = ensure_jars()?;
        let classpath = format!("{}/*", dir.join("libs").display());
        Ok(Jvm { java, classpath })
    }
}

fn find_java() -> Result<PathBuf> {
    let java = match std::env::var_os("JAVA_HOME") {
        Some(home) if Path::new(&home).join("bin/java").is_file() => {
            Path::new(&home).join("bin/java")
        }
        _ => PathBuf::from("java"),
    };
    let out = Command::new(&java)
        .arg("-version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::JavaMissing {
            detail: format!("running `{} -version`: {e}", java.display()),
        })?;
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    match java_major(&text) {
        Some(major) if major >= 17 => Ok(java),
        Some(major) => Err(Error::JavaMissing {
            detail: format!("`{}` is Java {major}", java.display()),
        }),
        None => Err(Error::JavaMissing {
            detail: format!(
                "cannot read the version of `{}` from: {}",
                java.display(),
                text.trim()
            ),
        }),
    }
}

/// The major version from `java -version` output (`"17.0.15"` → 17, `"1.8.0_392"` → 8).
pub(crate) fn java_major(version_output: &str) -> Option<u32> {
    let quoted = version_output.split('"').nth(1)?;
    let mut parts = quoted.split(['.', '_', '-', '+']);
    let first: u32 = parts.next()?.parse().ok()?;
    if first == 1 {
        parts.next()?.parse().ok()
    } else {
        Some(first)
    }
}

/// `$XDG_CACHE_HOME/flumen` (default `~/.cache/flumen`).
fn cache_root() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("flumen");
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => PathBuf::from(home).join(".cache/flumen"),
        None => std::env::temp_dir().join("flumen-cache"),
    }
}

fn is_complete(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join(COMPLETE_MARKER)).is_ok_and(|pom| pom == POM)
}

/// Returns the cache directory holding `libs/*.jar`, resolving it with Maven if needed.
fn ensure_jars() -> Result<PathBuf> {
    let root = cache_root();
    let dir = root.join(format!("kafka-{}", kafka_version()));
    if is_complete(&dir) {
        return Ok(dir);
    }
    std::fs::create_dir_all(&root)
        .map_err(|e| Error::io(format!("creating {}", root.display()), e))?;
    let lock_path = root.join(format!("kafka-{}.lock", kafka_version()));
    let lock = File::create(&lock_path)
        .map_err(|e| Error::io(format!("creating {}", lock_path.display()), e))?;
    // SAFETY: flock on a descriptor we own; released when `lock` is closed.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(Error::io(
            "locking the Kafka jar cache",
            std::io::Error::last_os_error(),
        ));
    }
    // Someone else may have finished while we waited for the lock.
    if is_complete(&dir) {
        return Ok(dir);
    }
    eprintln!(
        "flumen-testcontainers: resolving Apache Kafka {} jars with Maven into {} (once)",
        kafka_version(),
        dir.display()
    );
    let staging = root.join(format!(
        "kafka-{}.staging-{}",
        kafka_version(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)
        .map_err(|e| Error::io(format!("creating {}", staging.display()), e))?;
    let result = resolve_into(&staging).and_then(|()| {
        std::fs::write(staging.join(COMPLETE_MARKER), POM)
            .map_err(|e| Error::io("writing the cache marker", e))?;
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| Error::io(format!("removing stale {}", dir.display()), e))?;
        }
        std::fs::rename(&staging, &dir)
            .map_err(|e| Error::io(format!("moving jars into {}", dir.display()), e))
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    drop(lock);
    result.map(|()| dir)
}

fn resolve_into(staging: &Path) -> Result<()> {
    let pom = staging.join("pom.xml");
    std::fs::write(&pom, POM).map_err(|e| Error::io(format!("writing {}", pom.display()), e))?;
    let libs = staging.join("libs");
    let out = Command::new("mvn")
        .args(["-q", "-B", "-f"])
        .arg(&pom)
        .arg("dependency:copy-dependencies")
        .arg(format!("-DoutputDirectory={}", libs.display()))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::MavenMissing {
            version: kafka_version().to_owned(),
            detail: format!("running `mvn` failed: {e}"),
        })?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        return Err(Error::MavenFailed {
            status: out.status.to_string(),
            output: tail_lines(&text, 40),
        });
    }
    let has_kafka = std::fs::read_dir(&libs)
        .map_err(|e| Error::io(format!("listing {}", libs.display()), e))?
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().starts_with("kafka_2.13-"));
    if !has_kafka {
        return Err(Error::MavenFailed {
            status: "exit status: 0".to_owned(),
            output: format!("no kafka_2.13 jar in {}", libs.display()),
        });
    }
    Ok(())
}

/// The last `n` lines of `text`.
pub(crate) fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_major_reads_modern_and_legacy_version_strings() {
        assert_eq!(
            java_major("openjdk version \"17.0.15\" 2025-04-15"),
            Some(17)
        );
        assert_eq!(java_major("java version \"1.8.0_392\""), Some(8));
        assert_eq!(java_major("openjdk version \"21\" 2023-09-19"), Some(21));
        assert_eq!(java_major("garbage"), None);
    }

    #[test]
    fn pinned_kafka_version_is_read_from_the_pom() {
        assert_eq!(kafka_version(), "4.1.1");
    }
}
