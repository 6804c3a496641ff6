//! The rebalance listener: the application's hook to commit or flush before partitions move.

use crate::cluster::TopicPartition;

/// Called from inside [`Consumer::poll`](crate::consumer::Consumer::poll) when the group
/// moves partitions. With auto-commit on, the consumer commits the positions of revoked
/// partitions right after [`on_partitions_revoked`](Self::on_partitions_revoked) returns.
///
/// Eager assignors (range, round-robin) revoke everything before each rebalance;
/// cooperative-sticky revokes only the partitions that move (KIP-429).
pub trait RebalanceListener: Send {
    /// These partitions are about to be taken away; they are still assigned while this runs.
    fn on_partitions_revoked(&mut self, partitions: &[crate::cluster::TopicPartition]) {
        let _ = partitions;
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
