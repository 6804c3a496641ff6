//! The co-partitioned assignor (`flumen-co-partitioned`, cooperative): partition `p` of every
//! subscribed topic goes to the same member, so a stream processor's task — one partition
//! number over several co-partitioned topics — is never split between members.
//!
//! It runs the cooperative-sticky assignor over *partition numbers* (a member owns number `p`
//! when it owns any partition `p`), then gives each member partition `p` of every topic it
//! subscribes to that has one. Stickiness, balance (in partition numbers) and the two-step
//! hand-over of KIP-429 come from cooperative-sticky unchanged.

use std::collections::{BTreeMap, BTreeSet};

use super::{MemberSubscription, cooperative_sticky};
use crate::cluster::TopicPartition;

/// The synthetic topic whose partitions stand for partition numbers.
const NUMBERS: &str = "";

pub(super) fn assign(
    members: &[MemberSubscription],
    partitions: &BTreeMap<String, i32>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    let numbers = partitions.values().copied().max().unwrap_or(0);
    let by_number: Vec<MemberSubscription> = members
        .iter()
        .map(|m| {
            let owned: BTreeSet<i32> = m.owned.iter().map(|tp| tp.partition).collect();
            MemberSubscription {
                member_id: m.member_id.clone(),
                instance_id: m.instance_id.clone(),
                topics: if m.topics.is_empty() {
                    BTreeSet::new()
                } else {
                    [NUMBERS.to_owned()].into()
                },
                owned: owned
                    .into_iter()
                    .map(|p| TopicPartition::new(NUMBERS, p))
                    .collect(),
                generation: m.generation,
            }
        })
        .collect();
    let assigned = cooperative_sticky::assign(&by_number, &[(NUMBERS.to_owned(), numbers)].into());
    members
        .iter()
        .map(|m| {
            let mut tps = Vec::new();
            for number in assigned.get(&m.member_id).into_iter().flatten() {
                for topic in &m.topics {
                    if partitions.get(topic).is_some_and(|&n| number.partition < n) {
                        tps.push(TopicPartition::new(topic.clone(), number.partition));
                    }
                }
            }
            (m.member_id.clone(), tps)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::tests::member;
    use super::*;

    fn numbers_of(
        out: &BTreeMap<String, Vec<TopicPartition>>,
        m: &str,
    ) -> BTreeMap<i32, Vec<String>> {
        let mut v: BTreeMap<i32, Vec<String>> = BTreeMap::new();
        for tp in &out[m] {
            v.entry(tp.partition).or_default().push(tp.topic.clone());
        }
        v
    }

    #[test]
    fn each_partition_number_goes_whole_to_one_member() {
        let partitions: BTreeMap<String, i32> = [
            ("a".to_owned(), 4),
            ("b".to_owned(), 4),
            ("c".to_owned(), 2),
        ]
        .into();
        let members = [
            member("m1", &["a", "b", "c"], &[]),
            member("m2", &["a", "b", "c"], &[]),
        ];
        let out = assign(&members, &partitions);
        let (one, two) = (numbers_of(&out, "m1"), numbers_of(&out, "m2"));
        assert_eq!(one.len() + two.len(), 4);
        assert_eq!(one.len(), 2, "balanced by partition number");
        for (p, topics) in one.iter().chain(two.iter()) {
            let expected: Vec<&str> = if *p < 2 {
                vec!["a", "b", "c"]
            } else {
                vec!["a", "b"]
            };
            assert_eq!(topics, &expected, "partition {p}");
        }
        assert!(one.keys().all(|p| !two.contains_key(p)));
    }

    #[test]
    fn a_joining_member_takes_whole_numbers_after_the_owner_revokes_them() {
        let partitions: BTreeMap<String, i32> = [("a".to_owned(), 2), ("b".to_owned(), 2)].into();
        let all = [("a", 0), ("a", 1), ("b", 0), ("b", 1)];
        let members = [
            member("m1", &["a", "b"], &all),
            member("m2", &["a", "b"], &[]),
        ];
        let first = assign(&members, &partitions);
        assert_eq!(numbers_of(&first, "m1").len(), 1, "m1 gives up one number");
        assert!(first["m2"].is_empty(), "and m2 waits for the revocation");
        let kept: Vec<(&str, i32)> = first["m1"]
            .iter()
            .map(|tp| (tp.topic.as_str(), tp.partition))
            .collect();
        let members = [
            member("m1", &["a", "b"], &kept),
            member("m2", &["a", "b"], &[]),
        ];
        let second = assign(&members, &partitions);
        assert_eq!(second["m1"], first["m1"], "sticky");
        let moved = numbers_of(&second, "m2");
        assert_eq!(moved.len(), 1);
        assert_eq!(
            moved.values().next().map(Vec::len),
            Some(2),
            "both topics' partition"
        );
    }
}
