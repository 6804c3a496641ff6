//! The Java side of the local broker: finding a JDK 17+, and the Kafka jars resolved once by
//! Maven into a per-user cache, one directory per Kafka release.
//!
//! The pinned release resolves from `kafka/pom.xml` as it is; another release from a pom
//! generated from it ([`pom_for`]): `kafka.version` replaced, and for 3.x the log4j 1 pieces
//! swapped (Kafka 3.x's tools bring reload4j and its slf4j binding, which would compete with
//! the log4j2 binding and ignore the harness's log4j2 files: they are excluded, and
//! `log4j-1.2-api` serves the 3.x broker's own log4j 1 calls through log4j2).
//!
//! # Invariants
//! - The cache directory of a release (`kafka-<version>`) is only ever seen complete: Maven
//!   fills a private staging directory which is renamed into place, under an exclusive `flock`
//!   of that release (`kafka-<version>.lock`), so parallel test binaries resolving at the same
//!   moment neither race nor see half a classpath; releases resolve independently.
//! - A cache directory is used only if its marker holds exactly the pom it was resolved from:
//!   editing the pom re-resolves on next use. The pinned release's pom is `kafka/pom.xml`
//!   byte for byte, so checkouts that share the cache and agree on that file agree on its
//!   directory (a generated pom for the pinned release would make them replace each other's).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, Result};
use crate::version::KafkaVersion;

/// The pom that pins the Kafka version; embedded so the binary works outside the source tree.
pub(crate) const POM: &str = include_str!("../kafka/pom.xml");

/// Name of the file that marks a finished cache directory (it holds the release and the pom
/// it came from).
const COMPLETE_MARKER: &str = ".flumen-complete";

/// The Kafka version pinned in the pom (what a cluster runs unless its spec names another).
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
    /// Finds Java 17+ and makes sure the jars of Kafka `version` are in the cache (running
    /// Maven once per release).
    pub(crate) fn locate(version: KafkaVersion) -> Result<Jvm> {
        let java = find_java()?;
        let dir = ensure_jars(version)?;
        let classpath = format!("{}/*", dir.join("libs").display());
        Ok(Jvm { java, classpath })
    }
}

/// The `java` executable (Java 17+) and the classpath of Kafka `version`'s jars (resolved
/// with Maven on first use), for running Kafka's Java clients and tools against any broker,
/// one started elsewhere (`FLUMEN_KAFKA_BOOTSTRAP`) included.
pub fn java_and_classpath(version: KafkaVersion) -> Result<(PathBuf, String)> {
    let jvm = Jvm::locate(version)?;
    Ok((jvm.java, jvm.classpath))
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

/// The pom that resolves Kafka `version`: `kafka/pom.xml` itself for the pinned release,
/// else that pom with `kafka.version` replaced and, for 3.x, reload4j swapped for
/// `log4j-1.2-api` (see the module docs).
pub(crate) fn pom_for(version: KafkaVersion) -> String {
    let pinned = kafka_version();
    if version.to_string() == pinned {
        return POM.to_owned();
    }
    let mut pom = POM.replace(
        &format!("<kafka.version>{pinned}</kafka.version>"),
        &format!("<kafka.version>{version}</kafka.version>"),
    );
    if version.major < 4 {
        pom = pom.replace(
            "<artifactId>kafka-tools</artifactId>\n      <version>${kafka.version}</version>\n",
            "<artifactId>kafka-tools</artifactId>\n      <version>${kafka.version}</version>\n\
             \x20     <exclusions>\n\
             \x20       <exclusion><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId></exclusion>\n\
             \x20       <exclusion><groupId>ch.qos.reload4j</groupId><artifactId>reload4j</artifactId></exclusion>\n\
             \x20     </exclusions>\n",
        );
        pom = pom.replace(
            "  </dependencies>",
            "    <dependency>\n\
             \x20     <groupId>org.apache.logging.log4j</groupId>\n\
             \x20     <artifactId>log4j-1.2-api</artifactId>\n\
             \x20     <version>${log4j.version}</version>\n\
             \x20   </dependency>\n\
             \x20 </dependencies>",
        );
    }
    pom
}

fn is_complete(dir: &Path, pom: &str) -> bool {
    std::fs::read_to_string(dir.join(COMPLETE_MARKER)).is_ok_and(|m| m == pom)
}

/// Returns the cache directory holding `libs/*.jar` of Kafka `version`, resolving it with
/// Maven if needed.
fn ensure_jars(version: KafkaVersion) -> Result<PathBuf> {
    let root = cache_root();
    let dir = root.join(format!("kafka-{version}"));
    let pom = pom_for(version);
    if is_complete(&dir, &pom) {
        return Ok(dir);
    }
    std::fs::create_dir_all(&root)
        .map_err(|e| Error::io(format!("creating {}", root.display()), e))?;
    let lock_path = root.join(format!("kafka-{version}.lock"));
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
    if is_complete(&dir, &pom) {
        return Ok(dir);
    }
    eprintln!(
        "flumen-testcontainers: resolving Apache Kafka {version} jars with Maven into {} (once)",
        dir.display()
    );
    let staging = root.join(format!("kafka-{version}.staging-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)
        .map_err(|e| Error::io(format!("creating {}", staging.display()), e))?;
    let result = resolve_into(&staging, version, &pom).and_then(|()| {
        std::fs::write(staging.join(COMPLETE_MARKER), &pom)
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

fn resolve_into(staging: &Path, version: KafkaVersion, pom_text: &str) -> Result<()> {
    let pom = staging.join("pom.xml");
    std::fs::write(&pom, pom_text)
        .map_err(|e| Error::io(format!("writing {}", pom.display()), e))?;
    let libs = staging.join("libs");
    let out = Command::new("mvn")
        .args(["-q", "-B", "-f"])
        .arg(&pom)
        .arg("dependency:copy-dependencies")
        .arg(format!("-DoutputDirectory={}", libs.display()))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::MavenMissing {
            version: version.to_string(),
            detail: format!("running `mvn` failed: {e}"),
        })?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        return Err(Error::MavenFailed {
            version: version.to_string(),
            status: out.status.to_string(),
            output: tail_lines(&text, 40),
        });
    }
    // The broker jar of exactly this release: a pom that did not get the version across must
    // not pass as a cache of the wrong release.
    let broker_jar = format!("kafka_2.13-{version}.jar");
    let has_kafka = std::fs::read_dir(&libs)
        .map_err(|e| Error::io(format!("listing {}", libs.display()), e))?
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy() == broker_jar);
    if !has_kafka {
        return Err(Error::MavenFailed {
            version: version.to_string(),
            status: "exit status: 0".to_owned(),
            output: format!("no {broker_jar} in {}", libs.display()),
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

    #[test]
    fn pinned_release_uses_the_pom_as_is_and_others_a_generated_one() {
        assert_eq!(pom_for(KafkaVersion::pinned()), POM);
        let v4 = pom_for(KafkaVersion::new(4, 4, 0));
        assert!(v4.contains("<kafka.version>4.4.0</kafka.version>"), "{v4}");
        assert!(
            !v4.contains("reload4j") && !v4.contains("log4j-1.2-api"),
            "{v4}"
        );
        let v3 = pom_for(KafkaVersion::new(3, 9, 1));
        assert!(v3.contains("<kafka.version>3.9.1</kafka.version>"), "{v3}");
        assert!(!v3.contains(&format!("<kafka.version>{}<", kafka_version())));
        assert_eq!(v3.matches("<exclusion>").count(), 2, "{v3}");
        assert!(
            v3.contains("<artifactId>slf4j-reload4j</artifactId>"),
            "{v3}"
        );
        assert!(
            v3.contains("<artifactId>log4j-1.2-api</artifactId>"),
            "{v3}"
        );
        assert!(v3.trim_end().ends_with("</project>"), "{v3}");
    }
}
