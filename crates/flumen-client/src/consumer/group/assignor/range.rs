//! The range assignor: per topic, contiguous ranges of partitions, the first members
//! getting one extra when the count does not divide (the Java `RangeAssignor`).

use std::collections::BTreeMap;

use super::{MemberSubscription, sorted_members};
use crate::cluster::TopicPartition;

pub(super) fn assign(
    members: &[MemberSubscription],
    partitions: &BTreeMap<String, i32>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    let sorted = sorted_members(members);
    let mut out: BTreeMap<String, Vec<TopicPartition>> = BTreeMap::new();
    for (topic, &count) in partitions {
        let subscribers: Vec<&&MemberSubscription> =
            sorted.iter().filter(|m| m.topics.contains(topic)).collect();
        if subscribers.is_empty() || count <= 0 {
            continue;
        }
        let n = subscribers.len() as i32;
        let (each, extra) = (count / n, count % n);
        let mut next = 0;
        for (i, m) in subscribers.iter().enumerate() {
            let take = each + i32::from((i as i32) < extra);
            let entry = out.entry(m.member_id.clone()).or_default();
            entry.extend((next..next + take).map(|p| TopicPartition::new(topic.clone(), p)));
            next += take;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::tests::member;
    use super::*;

    #[test]
    fn ranges_are_contiguous_and_the_first_members_get_the_remainder() {
        let members = [member("b", &["t"], &[]), member("a", &["t"], &[])];
        let partitions: BTreeMap<String, i32> = [("t".to_owned(), 5)].into();
        let out = assign(&members, &partitions);
        let idx = |m: &str| out[m].iter().map(|tp| tp.partition).collect::<Vec<_>>();
        assert_eq!(idx("a"), [0, 1, 2]);
        assert_eq!(idx("b"), [3, 4]);
    }
}
