//! The cooperative-sticky assignor (KIP-429, the Java `CooperativeStickyAssignor`'s contract):
//! balanced, keeps as many partitions where they are as balance allows, and never hands a
//! partition straight from one member to another within one rebalance.
//!
//! Steps: (1) each member keeps the partitions it owns that still exist and that it still
//! subscribes to (on a double claim the higher generation wins); (2) members above the
//! balanced quota give up their excess; (3) free partitions go to the least-loaded
//! subscribed member; (4) members more than one apart are evened out; (5) a partition that
//! moves away from its previous owner is withheld from its new owner in this round: the old
//! owner revokes it, rejoins, and the next rebalance gives it out.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{MemberSubscription, all_partitions, sorted_members};
use crate::cluster::TopicPartition;

pub(super) fn assign(
    members: &[MemberSubscription],
    partitions: &BTreeMap<String, i32>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    let sorted = sorted_members(members);
    let all = all_partitions(partitions);
    let exists: BTreeSet<&TopicPartition> = all.iter().collect();
    let subscribes = |m: &str, topic: &str| {
        members
            .iter()
            .any(|x| x.member_id == m && x.topics.contains(topic))
    };

    // (1) Previous owners, the highest generation winning a double claim.
    let mut previous: HashMap<TopicPartition, (i32, String)> = HashMap::new();
    for m in &sorted {
        for tp in &m.owned {
            if !exists.contains(tp) || !m.topics.contains(&tp.topic) {
                continue;
            }
            match previous.get(tp) {
                Some((g, _)) if *g >= m.generation => {}
                _ => {
                    previous.insert(tp.clone(), (m.generation, m.member_id.clone()));
                }
            }
        }
    }
    let mut load: BTreeMap<String, Vec<TopicPartition>> = sorted
        .iter()
        .map(|m| (m.member_id.clone(), Vec::new()))
        .collect();
    if load.is_empty() {
        return load;
    }
    let mut owners: Vec<(&TopicPartition, &String)> =
        previous.iter().map(|(tp, (_, m))| (tp, m)).collect();
    owners.sort();
    for (tp, m) in owners {
        if let Some(v) = load.get_mut(m) {
            v.push(tp.clone());
        }
    }

    // (2) Trim to the ceiling of the balanced quota.
    let max_quota = all.len().div_ceil(load.len());
    let mut free: Vec<TopicPartition> = Vec::new();
    for v in load.values_mut() {
        v.sort();
        if v.len() > max_quota {
            free.extend(v.drain(max_quota..));
        }
    }
    let taken: BTreeSet<TopicPartition> = load.values().flatten().cloned().collect();
    free.extend(all.iter().filter(|tp| !taken.contains(*tp)).cloned());
    free.sort();
    free.dedup();

    // (3) Free partitions to the least-loaded subscriber.
    for tp in free {
        let target = load
            .iter()
            .filter(|(m, _)| subscribes(m, &tp.topic))
            .min_by_key(|(m, v)| (v.len(), (*m).clone()))
            .map(|(m, _)| m.clone());
        if let Some(m) = target
            && let Some(v) = load.get_mut(&m)
        {
            v.push(tp);
        }
    }

    // (4) Even out members more than one apart (bounded: each move narrows the spread).
    for _ in 0..all.len() {
        let Some((most, _)) = load
            .iter()
            .max_by_key(|(m, v)| (v.len(), std::cmp::Reverse((*m).clone())))
        else {
            break;
        };
        let most = most.clone();
        let most_len = load[&most].len();
        let candidate = load
            .iter()
            .filter(|(m, v)| **m != most && v.len() + 1 < most_len)
            .min_by_key(|(m, v)| (v.len(), (*m).clone()))
            .map(|(m, _)| m.clone());
        let Some(least) = candidate else { break };
        let movable = load[&most]
            .iter()
            .rposition(|tp| subscribes(&least, &tp.topic));
        let Some(i) = movable else { break };
        let tp = load.get_mut(&most).map(|v| v.remove(i));
        if let (Some(tp), Some(v)) = (tp, load.get_mut(&least)) {
            v.push(tp);
        }
    }

    // (5) No direct hand-over within one rebalance.
    for (m, v) in load.iter_mut() {
        v.retain(|tp| match previous.get(tp) {
            Some((_, owner)) => owner == m,
            None => true,
        });
    }
    load
}

#[cfg(test)]
mod tests {
    use super::super::tests::member;
    use super::*;

    fn idx(out: &BTreeMap<String, Vec<TopicPartition>>, m: &str) -> Vec<i32> {
        let mut v: Vec<i32> = out[m].iter().map(|tp| tp.partition).collect();
        v.sort();
        v
    }

    #[test]
    fn a_joining_member_gets_nothing_moved_directly_and_owners_keep_the_rest() {
        let partitions: BTreeMap<String, i32> = [("t".to_owned(), 4)].into();
        // m1 owns everything; m2 joins.
        let members = [
            member("m1", &["t"], &[("t", 0), ("t", 1), ("t", 2), ("t", 3)]),
            member("m2", &["t"], &[]),
        ];
        let first = assign(&members, &partitions);
        assert_eq!(idx(&first, "m1"), [0, 1], "m1 keeps half");
        assert!(
            first["m2"].is_empty(),
            "moved partitions wait for the revocation"
        );
        // After m1 revoked 2 and 3, the follow-up rebalance hands them to m2.
        let members = [
            member("m1", &["t"], &[("t", 0), ("t", 1)]),
            member("m2", &["t"], &[]),
        ];
        let second = assign(&members, &partitions);
        assert_eq!(idx(&second, "m1"), [0, 1]);
        assert_eq!(idx(&second, "m2"), [2, 3]);
    }

    #[test]
    fn a_leaving_members_partitions_go_to_the_others_without_moving_theirs() {
        let partitions: BTreeMap<String, i32> = [("t".to_owned(), 6)].into();
        let members = [
            member("m1", &["t"], &[("t", 0), ("t", 1)]),
            member("m2", &["t"], &[("t", 2), ("t", 3)]),
        ];
        let out = assign(&members, &partitions);
        assert!(idx(&out, "m1").starts_with(&[0, 1]));
        assert!(idx(&out, "m2").starts_with(&[2, 3]));
        assert_eq!(out["m1"].len() + out["m2"].len(), 6);
        assert_eq!(out["m1"].len(), 3);
    }

    #[test]
    fn the_higher_generation_wins_a_double_claim() {
        let partitions: BTreeMap<String, i32> = [("t".to_owned(), 2)].into();
        let mut old = member("a", &["t"], &[("t", 0), ("t", 1)]);
        old.generation = 1;
        let mut new = member("b", &["t"], &[("t", 0)]);
        new.generation = 2;
        let out = assign(&[old, new], &partitions);
        assert_eq!(idx(&out, "b"), [0]);
        assert_eq!(idx(&out, "a"), [1]);
    }
}
