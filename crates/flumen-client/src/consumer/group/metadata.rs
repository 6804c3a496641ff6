//! `ConsumerGroupMetadata`: who this member is in its group, for transactional offset commits.

/// The group identity of a consumer, as a transactional producer needs it for
/// `send_offsets_to_transaction` (fencing zombies by generation, KIP-447).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConsumerGroupMetadata {
    /// `group.id`.
    pub group_id: String,
    /// The generation (classic) or member epoch (KIP-848); -1 when not in a group.
    pub generation_id: i32,
    /// The member id the coordinator gave (empty when not in a group).
    pub member_id: String,
    /// `group.instance.id`, for static members.
    pub group_instance_id: Option<String>,
}
