//! The rebalance listener: the application's hook to commit or flush before partitions move.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use crate::admin::OffsetAndMetadata;
use crate::cluster::TopicPartition;

/// What [`RebalanceListener::commit_on_revoke`] hands the consumer: a future that resolves to
/// the offsets to commit for the partitions being revoked. It may wait (for a producer to
/// flush, say) before it resolves; `poll` waits for it.
pub type CommitOnRevoke =
    Pin<Box<dyn Future<Output = BTreeMap<TopicPartition, OffsetAndMetadata>> + Send>>;

/// Called from inside [`Consumer::poll`](crate::consumer::Consumer::poll) when the group
/// moves partitions. With auto-commit on, the consumer commits the positions of revoked
/// partitions right after [`on_partitions_revoked`](Self::on_partitions_revoked) returns.
///
/// Eager assignors (range, round-robin) revoke everything before each rebalance;
/// cooperative-sticky revokes only the partitions that move (KIP-429).
///
/// # Committing what was processed before partitions move
///
/// With auto-commit off, an application commits what it has processed. Positions it has not
/// committed when a partition moves are read again by the next owner. To hand partitions over
/// without re-reads, implement [`commit_on_revoke`](Self::commit_on_revoke): the consumer
/// commits the offsets it returns while the partitions are still this member's (the Java
/// client's `commitSync` inside `onPartitionsRevoked`).
///
/// The example program `crates/flumen-client/examples/commit_on_revoke.rs` is this pattern in
/// full (`cargo run -p flumen-client --example commit_on_revoke -- -b HOST:PORT TOPIC GROUP`),
/// and `flumen consume --group` uses it to commit what it printed.
///
/// ```
/// use std::collections::BTreeMap;
/// use std::sync::{Arc, Mutex};
/// use flumen_client::TopicPartition;
/// use flumen_client::consumer::{CommitOnRevoke, OffsetAndMetadata, RebalanceListener};
///
/// /// Offsets the application has finished with, shared with its poll loop.
/// #[derive(Clone, Default)]
/// struct Done(Arc<Mutex<BTreeMap<TopicPartition, OffsetAndMetadata>>>);
///
/// impl RebalanceListener for Done {
///     fn commit_on_revoke(&mut self, partitions: &[TopicPartition]) -> Option<CommitOnRevoke> {
///         let mut done = self.0.lock().unwrap();
///         let offsets: BTreeMap<_, _> = partitions
///             .iter()
///             .filter_map(|tp| done.remove_entry(tp))
///             .collect();
///         Some(Box::pin(async move { offsets }))
///     }
/// }
/// // consumer.set_rebalance_listener(done.clone()); then, after handling a record:
/// // done.0.lock().unwrap().insert(tp, OffsetAndMetadata::new(record.offset() + 1));
/// ```
pub trait RebalanceListener: Send {
    /// These partitions are about to be taken away; they are still assigned while this runs.
    fn on_partitions_revoked(&mut self, partitions: &[crate::cluster::TopicPartition]) {
        let _ = partitions;
    }

    /// Offsets to commit for `partitions` before they are revoked (after
    /// [`on_partitions_revoked`](Self::on_partitions_revoked)), or `None` for the default:
    /// the consumer's positions when auto-commit is on, nothing otherwise.
    ///
    /// The consumer awaits the future inside `poll` (or `close`), then commits the offsets it
    /// resolves to, for the revoked partitions only, synchronously and with the generation
    /// that still owns them, whether or not auto-commit is on. An eager rebalance revokes every
    /// partition first, so this is called for all of them. Not called for lost partitions:
    /// another member may own them already.
    fn commit_on_revoke(&mut self, partitions: &[TopicPartition]) -> Option<CommitOnRevoke> {
        let _ = partitions;
        None
    }

    /// These partitions were just added to the assignment.
    fn on_partitions_assigned(&mut self, partitions: &[TopicPartition]) {
        let _ = partitions;
    }

    /// These partitions were lost without a clean hand-over (the member was fenced or timed
    /// out): another member may already own them, so committing for them would fail.
    /// By default this is treated like a revocation.
    fn on_partitions_lost(&mut self, partitions: &[TopicPartition]) {
        self.on_partitions_revoked(partitions);
    }
}

/// The listener used when the application sets none.
#[derive(Debug, Default)]
pub(crate) struct NoopListener;

impl RebalanceListener for NoopListener {}
