//! The clusters shared by all tests of one test binary, started lazily and torn down when
//! the process exits.
//!
//! Statics are never dropped, so an `atexit` hook kills the brokers and removes the temp
//! dirs on a normal exit; on a crash or SIGKILL the brokers die by `PR_SET_PDEATHSIG`
//! (see `process`) and the temp dir is swept by the next run (see `tempdir`).

use std::sync::{Mutex, Once, OnceLock, PoisonError, TryLockError};

use crate::cluster::KafkaCluster;
use crate::spec::ClusterSpec;
use crate::version::KafkaVersion;

type Cell = OnceLock<Result<KafkaCluster, String>>;

static SHARED: Cell = OnceLock::new();
static SHARED_THREE: Cell = OnceLock::new();
static SHARED_RACKS: Cell = OnceLock::new();
/// One cell per release asked of [`KafkaCluster::shared_with_version`], leaked like the
/// statics above. The lock is held only to find or add a cell, never while a cluster starts,
/// so clusters of different releases start in parallel.
static SHARED_VERSIONS: Mutex<Vec<(KafkaVersion, &'static Cell)>> = Mutex::new(Vec::new());

impl KafkaCluster {
    /// One lazily started cluster per test binary: 1 broker with PLAINTEXT + SASL_PLAINTEXT
    /// (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 users) + SSL listeners. Panics with a clear
    /// message (including the broker log tail) if no broker can be had — tests never skip.
    pub fn shared() -> &'static KafkaCluster {
        get(&SHARED, ClusterSpec::single().with_sasl().with_tls())
    }

    /// A 3-broker cluster (PLAINTEXT only) shared per test binary, for fault tests.
    pub fn shared_three() -> &'static KafkaCluster {
        get(&SHARED_THREE, ClusterSpec::three())
    }

    /// A 3-broker cluster with one rack per broker (`ClusterSpec::three().with_racks()`),
    /// shared per test binary, for follower-fetching tests (KIP-392).
    pub fn shared_three_with_racks() -> &'static KafkaCluster {
        get(&SHARED_RACKS, ClusterSpec::three().with_racks())
    }

    /// One lazily started cluster per test binary and Kafka release `version` (`"3.9.1"`):
    /// 1 broker with PLAINTEXT + SASL_PLAINTEXT (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 users),
    /// for tests that check the client against several broker releases. Clusters of
    /// different releases start in parallel. Panics like [`shared`](Self::shared) if the
    /// cluster cannot be had, and on a malformed or unsupported `version`.
    pub fn shared_with_version(version: &str) -> &'static KafkaCluster {
        let version = KafkaVersion::parse(version).unwrap_or_else(|e| panic!("{e}"));
        let cell: &'static Cell = {
            let mut cells = SHARED_VERSIONS
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match cells.iter().find(|(v, _)| *v == version) {
                Some((_, cell)) => cell,
                None => {
                    let cell: &'static Cell = Box::leak(Box::new(OnceLock::new()));
                    cells.push((version, cell));
                    cell
                }
            }
        };
        get(
            cell,
            ClusterSpec::single()
                .with_sasl()
                .with_kafka_version(version),
        )
    }
}

fn get(cell: &'static Cell, spec: ClusterSpec) -> &'static KafkaCluster {
    // The failure is kept too, so that every test of the binary fails fast with the same
    // message instead of each waiting out its own start.
    let result = cell.get_or_init(|| {
        register_exit_hook();
        KafkaCluster::start(spec).map_err(|e| e.to_string())
    });
    match result {
        Ok(cluster) => cluster,
        Err(message) => panic!("no Kafka cluster for the tests ({spec:?}): {message}"),
    }
}

fn register_exit_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        // SAFETY: `at_exit` is a plain `extern "C" fn()` that does not unwind.
        unsafe {
            libc::atexit(at_exit);
        }
    });
}

extern "C" fn at_exit() {
    // Never unwind across the C boundary.
    let _ = std::panic::catch_unwind(|| {
        for cell in [&SHARED, &SHARED_THREE, &SHARED_RACKS] {
            if let Some(Ok(cluster)) = cell.get() {
                cluster.shutdown_at_exit();
            }
        }
        // Not waiting on a lock at exit: a thread that holds it is only ever finding a cell,
        // and the brokers die with the process anyway (PR_SET_PDEATHSIG).
        let versions = match SHARED_VERSIONS.try_lock() {
            Ok(guard) => Some(guard),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        };
        for (_, cell) in versions.iter().flat_map(|cells| cells.iter()) {
            if let Some(Ok(cluster)) = cell.get() {
                cluster.shutdown_at_exit();
            }
        }
    });
}
