//! The round-robin assignor: every partition of every topic, sorted, dealt to members in
//! turn, skipping members not subscribed to its topic (the Java `RoundRobinAssignor`).

use std::collections::BTreeMap;

use super::{MemberSubscription, all_partitions, sorted_members};
use crate::cluster::TopicPartition;

pub(super) fn assign(
    members: &[MemberSubscription],
    partitions: &BTreeMap<String, i32>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    let sorted = sorted_members(members);
    let mut out: BTreeMap<String, Vec<TopicPartition>> = BTreeMap::new();
    if sorted.is_empty() {
        return out;
    }
    let mut turn = 0usize;
    for tp in all_partitions(partitions) {
        for _ in 0..sorted.len() {
            let m = sorted[turn % sorted.len()];
            turn += 1;
            if m.topics.contains(&tp.topic) {
                out.entry(m.member_id.clone()).or_default().push(tp);
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::tests::member;
    use super::*;

    #[test]
    fn partitions_are_dealt_in_turn() {
        let members = [member("a", &["t"], &[]), member("b", &["t"], &[])];
        let partitions: BTreeMap<String, i32> = [("t".to_owned(), 4)].into();
        let out = assign(&members, &partitions);
        let idx = |m: &str| out[m].iter().map(|tp| tp.partition).collect::<Vec<_>>();
        assert_eq!(idx("a"), [0, 2]);
        assert_eq!(idx("b"), [1, 3]);
    }
}
