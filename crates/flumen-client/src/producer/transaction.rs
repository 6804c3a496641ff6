//! Transactions: `init_transactions`, `begin`, `send_offsets_to_transaction`, `commit`, `abort`.
//!
//! Two protocols, chosen once at `init_transactions` from the transaction coordinator's
//! ApiVersions answer ([`TransactionVersion`], [`Producer::transaction_version`]), as the
//! Java client does:
//!
//! - **V2** (KIP-890 part 2) when the cluster finalized the feature `transaction.version` at
//!   level 2 or more and the coordinator speaks Produce v12, EndTxn v5 and TxnOffsetCommit v5
//!   (Kafka 4.0+ clusters formatted with their defaults). Produce goes at v12: the partition
//!   leader adds the partition to the transaction itself, so no AddPartitionsToTxn is sent;
//!   offsets go straight to the group coordinator with TxnOffsetCommit v5, which adds the
//!   group (no AddOffsetsToTxn); EndTxn v5 answers with the epoch of the next transaction,
//!   or a new producer id at epoch 0 once the epoch would overflow. The producer adopts it
//!   and every partition's sequence numbers restart at 0. The per-transaction epoch bump is
//!   what fences a late produce of a finished transaction (KIP-890's hanging transactions).
//! - **V1**, the classic protocol (KIP-98), otherwise (Kafka 3.x, or 4.x formatted with
//!   `transaction.version` below 2): before the first batch of a transaction reaches a
//!   partition, the sender registers the partition with AddPartitionsToTxn; offsets join through AddOffsetsToTxn then TxnOffsetCommit (at most
//!   v4) to the group coordinator; EndTxn (at most v4) commits or aborts and the epoch stays.
//!   Produce requests stay at v11 so the broker does not expect the V2 flow.
//!
//! Invariants: the protocol of a producer never changes after `init_transactions` (a
//! cluster that finalizes V2 later is used by the next producer); under both, no batch of a
//! transaction is sent after its EndTxn, so adopting EndTxn's epoch never re-stamps a
//! batch; and EndTxn is sent only when something was written (or offsets sent) in the
//! transaction, as Java does.
//!
//! Errors: PRODUCER_FENCED / INVALID_PRODUCER_EPOCH mean another producer with the same
//! `transactional.id` took over ([`ProduceError::Fenced`]) — unless the transaction had been
//! open longer than `transaction.timeout.ms`, in which case the coordinator aborted it and
//! bumped the epoch itself ([`ProduceError::TransactionTimedOut`]). A failed batch makes
//! the transaction abortable ([`ProduceError::AbortableTransaction`]); so does
//! TRANSACTION_ABORTABLE, which V2 brokers answer when they could not add a partition or
//! the group to the transaction.
//!
//! # References
//! - KIP-98 (transactions), KIP-447 (group metadata in TxnOffsetCommit)
//! - KIP-890 (transactions server-side defense; part 2: transaction protocol v2)

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use flumen_protocol::ErrorCode;
use flumen_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use flumen_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use flumen_protocol::messages::{
    AddOffsetsToTxnRequest, AddPartitionsToTxnRequest, ApiKey, EndTxnRequest, GroupId, ProducerId,
    StrBytes, TopicName, TransactionalId, TxnOffsetCommitRequest,
};
use tokio::time::Instant;

use super::{Inner, ProduceError, Producer};
use crate::cluster::{CoordinatorType, TopicPartition};
use crate::connection::ApiVersions;
use crate::error::Error;

/// The transaction protocol a transactional producer uses (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum TransactionVersion {
    /// The classic protocol (KIP-98): AddPartitionsToTxn and AddOffsetsToTxn, one producer
    /// epoch for the producer's life. Brokers without `transaction.version` 2.
    V1,
    /// Transaction protocol v2 (KIP-890 part 2): partitions and groups join the transaction
    /// implicitly, every EndTxn bumps the producer epoch. Kafka 4.0+.
    V2,
}

impl TransactionVersion {
    /// 1 or 2.
    pub fn number(self) -> u8 {
        match self {
            TransactionVersion::V1 => 1,
            TransactionVersion::V2 => 2,
        }
    }

    /// The protocol to use with a transaction coordinator that answered ApiVersions with
    /// `versions`: V2 needs the finalized feature `transaction.version` >= 2 and the request
    /// versions that carry it (Produce v12, EndTxn v5, TxnOffsetCommit v5).
    pub(crate) fn from_api_versions(versions: &ApiVersions) -> TransactionVersion {
        let at_least = |key: ApiKey, v: i16| versions.max_version(key).is_some_and(|m| m >= v);
        let feature = versions
            .finalized_feature(TRANSACTION_VERSION_FEATURE)
            .unwrap_or(0);
        if feature >= 2
            && at_least(ApiKey::Produce, 12)
            && at_least(ApiKey::EndTxn, 5)
            && at_least(ApiKey::TxnOffsetCommit, 5)
        {
            TransactionVersion::V2
        } else {
            TransactionVersion::V1
        }
    }

    /// The highest Produce version a transactional producer may send: v12 announces V2.
    pub(crate) fn max_produce_version(self) -> i16 {
        match self {
            TransactionVersion::V1 => 11,
            TransactionVersion::V2 => 12,
        }
    }

    /// The highest EndTxn version: v5 asks for (and answers with) the epoch bump.
    fn max_end_txn_version(self) -> i16 {
        match self {
            TransactionVersion::V1 => 4,
            TransactionVersion::V2 => 5,
        }
    }

    /// The highest TxnOffsetCommit version: v5 adds the group to the transaction.
    fn max_txn_offset_commit_version(self) -> i16 {
        match self {
            TransactionVersion::V1 => 4,
            TransactionVersion::V2 => 5,
        }
    }
}

/// The name of the KIP-584 feature that says which transaction protocol the cluster runs.
const TRANSACTION_VERSION_FEATURE: &str = "transaction.version";

/// What the group coordinator needs to accept offsets from a transactional producer: the
/// consumer's group membership at the time (the consumer returns it).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerGroupMetadata {
    /// `group.id`.
    pub group_id: String,
    /// The generation the consumer is in (-1 when unknown: the coordinator then checks less).
    pub generation_id: i32,
    /// The consumer's member id (empty when unknown).
    pub member_id: String,
    /// `group.instance.id` of a static member.
    pub group_instance_id: Option<String>,
}

impl ConsumerGroupMetadata {
    /// Metadata naming only the group (generation -1, no member id), as Java's
    /// `new ConsumerGroupMetadata(groupId)`.
    pub fn new(group_id: impl Into<String>) -> Self {
        ConsumerGroupMetadata {
            group_id: group_id.into(),
            generation_id: -1,
            member_id: String::new(),
            group_instance_id: None,
        }
    }

    /// Metadata with every field.
    pub fn with_member(
        group_id: impl Into<String>,
        generation_id: i32,
        member_id: impl Into<String>,
        group_instance_id: Option<String>,
    ) -> Self {
        ConsumerGroupMetadata {
            group_id: group_id.into(),
            generation_id,
            member_id: member_id.into(),
            group_instance_id,
        }
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
enum Phase {
    #[default]
    Uninitialized,
    Ready,
    InTransaction,
    Committing,
    Aborting,
    Abortable(String),
}

/// The transaction's state, behind the producer's state lock.
#[derive(Debug, Default)]
pub(crate) struct TxnState {
    phase: Phase,
    /// Partitions written in this transaction and not yet registered with the coordinator.
    pending: Vec<(Arc<str>, i32)>,
    /// Partitions registered in this transaction.
    added: HashSet<(Arc<str>, i32)>,
    /// Offsets were added (AddOffsetsToTxn, or TxnOffsetCommit under V2): the coordinator
    /// has a transaction to end.
    offsets: bool,
    started: Option<Instant>,
    /// Chosen by `init_transactions`; `None` before.
    pub(crate) version: Option<TransactionVersion>,
}

impl TxnState {
    pub(crate) fn check_can_send(&self) -> Result<(), ProduceError> {
        match &self.phase {
            Phase::InTransaction => Ok(()),
            Phase::Abortable(e) => Err(ProduceError::AbortableTransaction(e.clone())),
            other => Err(ProduceError::TransactionState(format!(
                "send needs an open transaction (call begin_transaction); state is {other:?}"
            ))),
        }
    }

    /// A record for `topic`-`partition` joined the transaction. Under V1 the partition
    /// waits for AddPartitionsToTxn before its batches may leave; under V2 the leader adds
    /// it, so it only counts as written.
    #[inline]
    pub(crate) fn note_partition(&mut self, topic: &Arc<str>, partition: i32) {
        let key = (topic.clone(), partition);
        if self.added.contains(&key) {
            return;
        }
        if self.version == Some(TransactionVersion::V2) {
            self.added.insert(key);
        } else if !self.pending.contains(&key) {
            self.pending.push(key);
        }
    }

    /// Whether batches may be sent: every partition written is registered.
    pub(crate) fn can_drain(&self) -> bool {
        self.pending.is_empty() && !matches!(self.phase, Phase::Abortable(_) | Phase::Aborting)
    }

    pub(crate) fn committing(&self) -> bool {
        self.phase == Phase::Committing
    }

    pub(crate) fn set_abortable(&mut self, reason: String) {
        if matches!(self.phase, Phase::InTransaction | Phase::Committing) {
            self.phase = Phase::Abortable(reason);
        }
    }
}

fn txn_id(inner: &Inner) -> Result<String, ProduceError> {
    inner
        .config
        .transactional_id
        .clone()
        .ok_or_else(|| ProduceError::TransactionState("transactional.id is not set".to_owned()))
}

/// Maps a coordinator's error for a transactional call.
fn txn_error(inner: &Inner, api: &'static str, code: ErrorCode) -> ProduceError {
    let e = Error::Broker {
        code,
        api,
        topic: None,
        partition: None,
        message: None,
    };
    match code {
        ErrorCode::ProducerFenced
        | ErrorCode::InvalidProducerEpoch
        | ErrorCode::TransactionalIdAuthorizationFailed => {
            let started = inner.state().txn.started;
            if started.is_some_and(|s| s.elapsed() >= inner.config.transaction_timeout) {
                ProduceError::TransactionTimedOut(e.to_string())
            } else {
                ProduceError::Fenced(e.to_string())
            }
        }
        ErrorCode::TransactionAbortable => ProduceError::AbortableTransaction(e.to_string()),
        _ => ProduceError::from(e),
    }
}

/// Whether a coordinator error means "ask again" (possibly after finding it anew).
fn coordinator_retriable(code: ErrorCode) -> bool {
    code.is_retriable()
        || matches!(
            code,
            ErrorCode::ConcurrentTransactions
                | ErrorCode::CoordinatorLoadInProgress
                | ErrorCode::NotCoordinator
                | ErrorCode::CoordinatorNotAvailable
        )
}

/// Runs one coordinator request (built by `op` from a connection) until it succeeds, fails
/// for good, or `max.block.ms` passes.
async fn with_coordinator<T, F, Fut>(
    inner: &Inner,
    kind: CoordinatorType,
    key: &str,
    api: &'static str,
    mut op: F,
) -> Result<T, ProduceError>
where
    F: FnMut(crate::connection::Connection) -> Fut,
    Fut: Future<Output = Result<(ErrorCode, T), Error>>,
{
    let deadline = Instant::now() + inner.config.max_block;
    let mut backoff = inner.config.client.retry_backoff;
    loop {
        let attempt = async {
            let conn = inner.cluster.coordinator_connection(kind, key).await?;
            op(conn).await
        }
        .await;
        let retry_err = match attempt {
            Ok((ErrorCode::None, value)) => return Ok(value),
            Ok((code, _)) if coordinator_retriable(code) => {
                if matches!(
                    code,
                    ErrorCode::NotCoordinator | ErrorCode::CoordinatorNotAvailable
                ) {
                    inner.cluster.invalidate_coordinator(kind, key);
                }
                txn_error(inner, api, code)
            }
            Ok((code, _)) => return Err(txn_error(inner, api, code)),
            Err(e) if e.is_retriable() => {
                inner.cluster.note_coordinator_error(kind, key, &e);
                ProduceError::from(e)
            }
            Err(e) => return Err(ProduceError::from(e)),
        };
        if Instant::now() + backoff >= deadline {
            return Err(retry_err);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(inner.config.client.retry_backoff_max);
    }
}

/// Registers the partitions written since the last call (called by the sender before it drains).
pub(crate) async fn add_pending_partitions(inner: &Inner) -> Result<(), ProduceError> {
    let (pending, pid, epoch) = {
        let s = inner.state();
        if s.txn.pending.is_empty()
            || !matches!(s.txn.phase, Phase::InTransaction | Phase::Committing)
        {
            return Ok(());
        }
        (s.txn.pending.clone(), s.idem.producer_id, s.idem.epoch)
    };
    let id = txn_id(inner)?;
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in &pending {
        topics.entry(t).or_default().push(*p);
    }
    let request_topics: Vec<AddPartitionsToTxnTopic> = topics
        .iter()
        .map(|(t, ps)| {
            AddPartitionsToTxnTopic::default()
                .with_name(TopicName(StrBytes::from_string((*t).to_owned())))
                .with_partitions(ps.clone())
        })
        .collect();
    let result = with_coordinator(
        inner,
        CoordinatorType::Transaction,
        &id,
        "AddPartitionsToTxn",
        |conn| {
            let request = AddPartitionsToTxnRequest::default()
                .with_v3_and_below_transactional_id(TransactionalId(StrBytes::from_string(
                    id.clone(),
                )))
                .with_v3_and_below_producer_id(ProducerId(pid))
                .with_v3_and_below_producer_epoch(epoch)
                .with_v3_and_below_topics(request_topics.clone());
            async move {
                let version = conn
                    .api_version(ApiKey::AddPartitionsToTxn)
                    .unwrap_or(0)
                    .min(3);
                let response = conn.send_version(request, version).await?;
                let mut worst = ErrorCode::from_code(response.error_code);
                for t in &response.results_by_topic_v3_and_below {
                    for p in &t.results_by_partition {
                        let code = ErrorCode::from_code(p.partition_error_code);
                        // OPERATION_NOT_ATTEMPTED accompanies another partition's real error.
                        if code != ErrorCode::None && code != ErrorCode::OperationNotAttempted {
                            worst = code;
                        }
                    }
                }
                Ok((worst, ()))
            }
        },
    )
    .await;
    let mut s = inner.state();
    match result {
        Ok(()) => {
            for key in pending {
                s.txn.pending.retain(|k| k != &key);
                s.txn.added.insert(key);
            }
            Ok(())
        }
        Err(e) => {
            if !matches!(e, ProduceError::Client(_)) || !e_is_retriable(&e) {
                s.txn.set_abortable(e.to_string());
            }
            Err(e)
        }
    }
}

fn e_is_retriable(e: &ProduceError) -> bool {
    match e {
        ProduceError::Client(e) => e.is_retriable(),
        _ => false,
    }
}

impl Producer {
    /// Registers the `transactional.id` with its coordinator (fencing older producers with
    /// the same id, and completing their open transaction). Call once before the first
    /// transaction.
    pub async fn init_transactions(&self) -> Result<(), ProduceError> {
        let id = txn_id(&self.inner)?;
        super::idempotence::init_producer_id(&self.inner).await?;
        // The coordinator's connection carries the cluster's finalized features.
        let cluster = &self.inner.cluster;
        let deadline = Instant::now() + self.inner.config.max_block;
        let conn = cluster
            .retry(deadline, || {
                cluster.coordinator_connection(CoordinatorType::Transaction, &id)
            })
            .await?;
        let version = conn.api_versions().map_or(
            TransactionVersion::V1,
            TransactionVersion::from_api_versions,
        );
        let mut s = self.inner.state();
        if s.txn.version.is_none() {
            tracing::debug!(
                transactional_id = %id,
                transaction_version = version.number(),
                coordinator = conn.addr(),
                "transaction protocol chosen"
            );
            s.txn.version = Some(version);
        }
        s.txn.phase = Phase::Ready;
        Ok(())
    }

    /// The transaction protocol this producer uses: [`TransactionVersion::V2`] (KIP-890)
    /// when the cluster finalized `transaction.version` 2 (Kafka 4.0+ by default),
    /// [`TransactionVersion::V1`] (the classic KIP-98 flow) otherwise. Chosen by
    /// [`init_transactions`](Self::init_transactions) and kept for the producer's life;
    /// `None` before it, and for a producer without `transactional.id`.
    pub fn transaction_version(&self) -> Option<TransactionVersion> {
        self.inner.state().txn.version
    }

    /// Starts a transaction: records sent from now on are committed or aborted together.
    pub async fn begin_transaction(&self) -> Result<(), ProduceError> {
        let mut s = self.inner.state();
        if let Some(e) = &s.fatal {
            return Err(e.clone());
        }
        match &s.txn.phase {
            Phase::Ready => {
                s.txn.phase = Phase::InTransaction;
                s.txn.added.clear();
                s.txn.pending.clear();
                s.txn.offsets = false;
                s.txn.started = Some(Instant::now());
                Ok(())
            }
            other => Err(ProduceError::TransactionState(format!(
                "begin_transaction needs a finished previous transaction (and init_transactions); state is {other:?}"
            ))),
        }
    }

    /// Adds consumed offsets to the transaction: they are committed for `group` if and
    /// only if the transaction commits. `offsets` are the next offsets to read.
    pub async fn send_offsets_to_transaction(
        &self,
        offsets: &[(TopicPartition, i64)],
        group: &ConsumerGroupMetadata,
    ) -> Result<(), ProduceError> {
        let inner = &*self.inner;
        let id = txn_id(inner)?;
        let (pid, epoch, version) = {
            let s = inner.state();
            s.txn.check_can_send()?;
            let version = s.txn.version.unwrap_or(TransactionVersion::V1);
            (s.idem.producer_id, s.idem.epoch, version)
        };
        if version == TransactionVersion::V2 {
            // TxnOffsetCommit v5 makes the group coordinator add the group to the
            // transaction; from here on there is a transaction to end.
            inner.state().txn.offsets = true;
        } else {
            let group_id = group.group_id.clone();
            with_coordinator(
                inner,
                CoordinatorType::Transaction,
                &id,
                "AddOffsetsToTxn",
                |conn| {
                    let request = AddOffsetsToTxnRequest::default()
                        .with_transactional_id(TransactionalId(StrBytes::from_string(id.clone())))
                        .with_producer_id(ProducerId(pid))
                        .with_producer_epoch(epoch)
                        .with_group_id(GroupId(StrBytes::from_string(group_id.clone())));
                    async move {
                        let response = conn.send(request).await?;
                        Ok((ErrorCode::from_code(response.error_code), ()))
                    }
                },
            )
            .await
            .inspect_err(|e| inner.state().txn.set_abortable(e.to_string()))?;
            inner.state().txn.offsets = true;
        }

        let mut topics: BTreeMap<&str, Vec<TxnOffsetCommitRequestPartition>> = BTreeMap::new();
        for (tp, offset) in offsets {
            topics.entry(&tp.topic).or_default().push(
                TxnOffsetCommitRequestPartition::default()
                    .with_partition_index(tp.partition)
                    .with_committed_offset(*offset)
                    .with_committed_leader_epoch(-1),
            );
        }
        let topics: Vec<TxnOffsetCommitRequestTopic> = topics
            .into_iter()
            .map(|(t, ps)| {
                TxnOffsetCommitRequestTopic::default()
                    .with_name(TopicName(StrBytes::from_string(t.to_owned())))
                    .with_partitions(ps)
            })
            .collect();
        with_coordinator(
            inner,
            CoordinatorType::Group,
            &group.group_id,
            "TxnOffsetCommit",
            |conn| {
                let request = TxnOffsetCommitRequest::default()
                    .with_transactional_id(TransactionalId(StrBytes::from_string(id.clone())))
                    .with_group_id(GroupId(StrBytes::from_string(group.group_id.clone())))
                    .with_producer_id(ProducerId(pid))
                    .with_producer_epoch(epoch)
                    .with_generation_id(group.generation_id)
                    .with_member_id(StrBytes::from_string(group.member_id.clone()))
                    .with_group_instance_id(
                        group.group_instance_id.clone().map(StrBytes::from_string),
                    )
                    .with_topics(topics.clone());
                async move {
                    let version = conn
                        .api_version(ApiKey::TxnOffsetCommit)
                        .ok_or_else(|| Error::UnsupportedVersion {
                            addr: conn.addr().to_owned(),
                            api: "TxnOffsetCommit",
                        })?
                        .min(version.max_txn_offset_commit_version());
                    let response = conn.send_version(request, version).await?;
                    let mut worst = ErrorCode::None;
                    for t in &response.topics {
                        for p in &t.partitions {
                            let code = ErrorCode::from_code(p.error_code);
                            if code != ErrorCode::None {
                                worst = code;
                            }
                        }
                    }
                    Ok((worst, ()))
                }
            },
        )
        .await
        .inspect_err(|e| inner.state().txn.set_abortable(e.to_string()))
    }

    /// Sends what is buffered, waits for it, and commits the transaction.
    pub async fn commit_transaction(&self) -> Result<(), ProduceError> {
        {
            let mut s = self.inner.state();
            match &s.txn.phase {
                Phase::InTransaction => s.txn.phase = Phase::Committing,
                Phase::Abortable(e) => return Err(ProduceError::AbortableTransaction(e.clone())),
                other => {
                    return Err(ProduceError::TransactionState(format!(
                        "commit_transaction needs an open transaction; state is {other:?}"
                    )));
                }
            }
        }
        self.flush().await?;
        if let Phase::Abortable(e) = &self.inner.state().txn.phase {
            return Err(ProduceError::AbortableTransaction(e.clone()));
        }
        self.end_transaction(true).await
    }

    /// Drops what is not yet sent, waits for what is in flight, and aborts the transaction:
    /// its records stay invisible to `read_committed` consumers.
    pub async fn abort_transaction(&self) -> Result<(), ProduceError> {
        {
            let mut s = self.inner.state();
            match &s.txn.phase {
                Phase::InTransaction | Phase::Committing | Phase::Abortable(_) => {
                    s.txn.phase = Phase::Aborting;
                }
                other => {
                    return Err(ProduceError::TransactionState(format!(
                        "abort_transaction needs an open transaction; state is {other:?}"
                    )));
                }
            }
        }
        super::sender::fail_all(
            &self.inner,
            ProduceError::AbortableTransaction("the transaction was aborted".to_owned()),
        );
        self.flush().await?;
        self.end_transaction(false).await
    }

    async fn end_transaction(&self, commit: bool) -> Result<(), ProduceError> {
        let inner = &*self.inner;
        let id = txn_id(inner)?;
        let (pid, epoch, version, anything) = {
            let s = inner.state();
            (
                s.idem.producer_id,
                s.idem.epoch,
                s.txn.version.unwrap_or(TransactionVersion::V1),
                // Nothing written and no offsets: the coordinator never heard of this
                // transaction (as Java, no EndTxn is sent).
                !s.txn.added.is_empty() || !s.txn.pending.is_empty() || s.txn.offsets,
            )
        };
        let result = if anything {
            with_coordinator(inner, CoordinatorType::Transaction, &id, "EndTxn", |conn| {
                let request = EndTxnRequest::default()
                    .with_transactional_id(TransactionalId(StrBytes::from_string(id.clone())))
                    .with_producer_id(ProducerId(pid))
                    .with_producer_epoch(epoch)
                    .with_committed(commit);
                async move {
                    // v5 belongs to transaction protocol v2 (epoch bump per transaction).
                    let version = conn
                        .api_version(ApiKey::EndTxn)
                        .unwrap_or(0)
                        .min(version.max_end_txn_version());
                    let response = conn.send_version(request, version).await?;
                    let code = ErrorCode::from_code(response.error_code);
                    // Nothing was written in this transaction: the coordinator has no
                    // transaction to end, which is fine.
                    let code = if code == ErrorCode::InvalidTxnState && !commit {
                        ErrorCode::None
                    } else {
                        code
                    };
                    let next = super::idempotence::identity_after_end_txn(
                        response.producer_id.0,
                        response.producer_epoch,
                    );
                    Ok((code, next))
                }
            })
            .await
        } else {
            Ok(None)
        };
        let mut s = inner.state();
        match &result {
            Ok(next) => {
                if let Some((next_pid, next_epoch)) = *next {
                    tracing::debug!(
                        producer_id = next_pid,
                        epoch = next_epoch,
                        "next transaction's producer id and epoch (EndTxn v5)"
                    );
                    super::idempotence::adopt_identity(&mut s, next_pid, next_epoch);
                }
                s.txn.phase = Phase::Ready;
                s.txn.added.clear();
                s.txn.pending.clear();
                s.txn.offsets = false;
                s.txn.started = None;
            }
            Err(ProduceError::Fenced(_)) | Err(ProduceError::TransactionTimedOut(_)) => {
                if let Err(e) = &result {
                    s.fatal = Some(e.clone());
                }
            }
            Err(e) => s.txn.phase = Phase::Abortable(e.to_string()),
        }
        result.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flumen_protocol::messages::ApiVersionsResponse;
    use flumen_protocol::messages::api_versions_response::{ApiVersion, FinalizedFeatureKey};

    /// An ApiVersions answer offering `apis` (key, max version) with `transaction.version`
    /// finalized at `level` (`None`: no features reported).
    fn answer(apis: &[(ApiKey, i16)], level: Option<i16>) -> ApiVersions {
        let mut response = ApiVersionsResponse::default().with_api_keys(
            apis.iter()
                .map(|&(key, max)| {
                    ApiVersion::default()
                        .with_api_key(key as i16)
                        .with_min_version(0)
                        .with_max_version(max)
                })
                .collect(),
        );
        if let Some(level) = level {
            response = response
                .with_finalized_features_epoch(7)
                .with_finalized_features(vec![
                    FinalizedFeatureKey::default()
                        .with_name(StrBytes::from_static_str("transaction.version"))
                        .with_max_version_level(level),
                ]);
        }
        ApiVersions::from_response(&response)
    }

    const KAFKA_4: &[(ApiKey, i16)] = &[
        (ApiKey::Produce, 12),
        (ApiKey::EndTxn, 5),
        (ApiKey::TxnOffsetCommit, 5),
        (ApiKey::AddPartitionsToTxn, 5),
    ];

    #[test]
    fn v2_needs_the_finalized_feature_and_the_request_versions() {
        assert_eq!(
            TransactionVersion::from_api_versions(&answer(KAFKA_4, Some(2))),
            TransactionVersion::V2
        );
        // A 4.x broker whose cluster was formatted with transaction.version 0 or 1.
        for level in [None, Some(0), Some(1)] {
            assert_eq!(
                TransactionVersion::from_api_versions(&answer(KAFKA_4, level)),
                TransactionVersion::V1,
                "{level:?}"
            );
        }
        // The feature without the request versions (a 3.x-style API table): classic.
        let old = [
            (ApiKey::Produce, 11),
            (ApiKey::EndTxn, 4),
            (ApiKey::TxnOffsetCommit, 4),
        ];
        assert_eq!(
            TransactionVersion::from_api_versions(&answer(&old, Some(2))),
            TransactionVersion::V1
        );
    }

    #[test]
    fn request_versions_follow_the_protocol() {
        assert_eq!(TransactionVersion::V1.max_produce_version(), 11);
        assert_eq!(TransactionVersion::V2.max_produce_version(), 12);
        assert_eq!(TransactionVersion::V1.max_end_txn_version(), 4);
        assert_eq!(TransactionVersion::V2.max_end_txn_version(), 5);
        assert_eq!(TransactionVersion::V1.max_txn_offset_commit_version(), 4);
        assert_eq!(TransactionVersion::V2.max_txn_offset_commit_version(), 5);
        assert_eq!(
            (
                TransactionVersion::V1.number(),
                TransactionVersion::V2.number()
            ),
            (1, 2)
        );
    }

    #[test]
    fn under_v2_a_written_partition_needs_no_registration() {
        let topic: Arc<str> = Arc::from("t");
        let mut v1 = TxnState {
            version: Some(TransactionVersion::V1),
            phase: Phase::InTransaction,
            ..TxnState::default()
        };
        v1.note_partition(&topic, 0);
        v1.note_partition(&topic, 0);
        assert_eq!(v1.pending.len(), 1);
        assert!(!v1.can_drain(), "V1 waits for AddPartitionsToTxn");

        let mut v2 = TxnState {
            version: Some(TransactionVersion::V2),
            phase: Phase::InTransaction,
            ..TxnState::default()
        };
        v2.note_partition(&topic, 0);
        assert!(v2.pending.is_empty());
        assert!(v2.added.contains(&(topic, 0)), "counts as written");
        assert!(v2.can_drain());
    }
}
