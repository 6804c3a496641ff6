//! Client-side partition assignors of the classic protocol, and the standard
//! ConsumerProtocol subscription / assignment encoding, so Java members interoperate.
//!
//! A member's JoinGroup metadata is `version i16` followed by `ConsumerProtocolSubscription`
//! at that version; the leader's SyncGroup assignment is `version i16` followed by
//! `ConsumerProtocolAssignment`. Versions newer than we know are read as the newest we know
//! (fields are only ever appended), as the Java client does.
//!
//! Every assignor is deterministic: members and partitions are sorted before dealing.

pub(crate) mod co_partitioned;
mod cooperative_sticky;
mod range;
mod round_robin;

use std::collections::{BTreeMap, BTreeSet};

use bytes::{Bytes, BytesMut};
use flumen_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
use flumen_protocol::messages::consumer_protocol_subscription::TopicPartition as OwnedTopic;
use flumen_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, Decodable, Encodable, StrBytes,
    TopicName,
};

use crate::cluster::TopicPartition;
use crate::consumer::AssignmentStrategy;
use crate::error::Error;

/// The subscription version we write (3: with rack id).
const SUBSCRIPTION_VERSION: i16 = 3;
/// The assignment version we write.
const ASSIGNMENT_VERSION: i16 = 3;

/// One member's subscription, as the leader sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct MemberSubscription {
    pub(crate) member_id: String,
    pub(crate) instance_id: Option<String>,
    pub(crate) topics: BTreeSet<String>,
    pub(crate) owned: Vec<TopicPartition>,
    /// The generation in which `owned` was assigned (-1: unknown).
    pub(crate) generation: i32,
    /// The subscription's user data (the co-partitioned assignor's [`co_partitioned::MemberData`]).
    pub(crate) user_data: Option<Bytes>,
}

/// Member id -> assigned partitions.
pub(crate) type Assignment = BTreeMap<String, Vec<TopicPartition>>;

/// Runs `strategy` over `members`, with `partitions` giving each topic's partition count.
pub(crate) fn assign(
    strategy: AssignmentStrategy,
    members: &[MemberSubscription],
    partitions: &BTreeMap<String, i32>,
) -> Assignment {
    let mut out: Assignment = members
        .iter()
        .map(|m| (m.member_id.clone(), Vec::new()))
        .collect();
    let assigned = match strategy {
        AssignmentStrategy::Range => range::assign(members, partitions),
        AssignmentStrategy::RoundRobin => round_robin::assign(members, partitions),
        AssignmentStrategy::CooperativeSticky => cooperative_sticky::assign(members, partitions),
        AssignmentStrategy::CoPartitioned => co_partitioned::assign(members, partitions),
    };
    for (member, mut tps) in assigned {
        tps.sort();
        out.insert(member, tps);
    }
    out
}

/// Members sorted the way the Java client sorts them: static members by instance id
/// first, then dynamic members by member id.
pub(crate) fn sorted_members(members: &[MemberSubscription]) -> Vec<&MemberSubscription> {
    let mut v: Vec<&MemberSubscription> = members.iter().collect();
    v.sort_by(|a, b| match (&a.instance_id, &b.instance_id) {
        (Some(x), Some(y)) => x.cmp(y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.member_id.cmp(&b.member_id),
    });
    v
}

fn protocol_error(message: String) -> Error {
    Error::Protocol(flumen_protocol::Error::Decode {
        api: "ConsumerProtocol",
        version: 0,
        message,
    })
}

/// Encodes our JoinGroup metadata.
pub(crate) fn encode_subscription(
    topics: &BTreeSet<String>,
    owned: &[TopicPartition],
    generation: i32,
    rack: Option<&str>,
    user_data: Option<Bytes>,
) -> Result<Bytes, Error> {
    let mut s = ConsumerProtocolSubscription::default();
    s.topics = topics
        .iter()
        .map(|t| StrBytes::from_string(t.clone()))
        .collect();
    s.owned_partitions = by_topic(owned)
        .into_iter()
        .map(|(topic, partitions)| {
            let mut t = OwnedTopic::default();
            t.topic = TopicName(StrBytes::from_string(topic));
            t.partitions = partitions;
            t
        })
        .collect();
    s.generation_id = generation;
    s.rack_id = rack.map(|r| StrBytes::from_string(r.to_owned()));
    s.user_data = user_data;
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&SUBSCRIPTION_VERSION.to_be_bytes());
    s.encode(&mut buf, SUBSCRIPTION_VERSION)
        .map_err(|e| protocol_error(e.to_string()))?;
    Ok(buf.freeze())
}

/// Decodes a member's JoinGroup metadata.
pub(crate) fn decode_subscription(
    member_id: String,
    instance_id: Option<String>,
    mut metadata: Bytes,
) -> Result<MemberSubscription, Error> {
    let version = read_version(&mut metadata)?.min(SUBSCRIPTION_VERSION);
    let s = ConsumerProtocolSubscription::decode(&mut metadata, version)
        .map_err(|e| protocol_error(format!("subscription of {member_id}: {e}")))?;
    let mut owned = Vec::new();
    for t in s.owned_partitions {
        for p in t.partitions {
            owned.push(TopicPartition::new(t.topic.0.to_string(), p));
        }
    }
    Ok(MemberSubscription {
        member_id,
        instance_id,
        topics: s.topics.into_iter().map(|t| t.to_string()).collect(),
        owned,
        generation: if version >= 2 { s.generation_id } else { -1 },
        user_data: s.user_data,
    })
}

/// Encodes one member's SyncGroup assignment.
pub(crate) fn encode_assignment(
    partitions: &[TopicPartition],
    user_data: Option<Bytes>,
) -> Result<Bytes, Error> {
    let mut a = ConsumerProtocolAssignment::default();
    a.user_data = user_data;
    a.assigned_partitions = by_topic(partitions)
        .into_iter()
        .map(|(topic, partitions)| {
            let mut t = AssignedTopic::default();
            t.topic = TopicName(StrBytes::from_string(topic));
            t.partitions = partitions;
            t
        })
        .collect();
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&ASSIGNMENT_VERSION.to_be_bytes());
    a.encode(&mut buf, ASSIGNMENT_VERSION)
        .map_err(|e| protocol_error(e.to_string()))?;
    Ok(buf.freeze())
}

/// A member's SyncGroup assignment, decoded.
#[derive(Debug, Default)]
pub(crate) struct MemberAssignment {
    /// Sorted.
    pub(crate) partitions: Vec<TopicPartition>,
    pub(crate) user_data: Option<Bytes>,
}

/// Decodes our SyncGroup assignment (empty bytes: nothing assigned).
pub(crate) fn decode_assignment(mut bytes: Bytes) -> Result<MemberAssignment, Error> {
    if bytes.is_empty() {
        return Ok(MemberAssignment::default());
    }
    let version = read_version(&mut bytes)?.min(ASSIGNMENT_VERSION);
    let a = ConsumerProtocolAssignment::decode(&mut bytes, version)
        .map_err(|e| protocol_error(format!("assignment: {e}")))?;
    let mut out = Vec::new();
    for t in a.assigned_partitions {
        for p in t.partitions {
            out.push(TopicPartition::new(t.topic.0.to_string(), p));
        }
    }
    out.sort();
    Ok(MemberAssignment {
        partitions: out,
        user_data: a.user_data,
    })
}

fn read_version(bytes: &mut Bytes) -> Result<i16, Error> {
    if bytes.len() < 2 {
        return Err(protocol_error("missing version".to_owned()));
    }
    let v = i16::from_be_bytes([bytes[0], bytes[1]]);
    if v < 0 {
        return Err(protocol_error(format!("negative version {v}")));
    }
    let _ = bytes.split_to(2);
    Ok(v)
}

fn by_topic(tps: &[TopicPartition]) -> BTreeMap<String, Vec<i32>> {
    let mut out: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for tp in tps {
        out.entry(tp.topic.clone()).or_default().push(tp.partition);
    }
    for v in out.values_mut() {
        v.sort_unstable();
    }
    out
}

/// Every partition of the topics in `partitions`, sorted by topic then index.
pub(crate) fn all_partitions(partitions: &BTreeMap<String, i32>) -> Vec<TopicPartition> {
    partitions
        .iter()
        .flat_map(|(t, n)| (0..*n).map(move |p| TopicPartition::new(t.clone(), p)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn member(id: &str, topics: &[&str], owned: &[(&str, i32)]) -> MemberSubscription {
        MemberSubscription {
            member_id: id.to_owned(),
            instance_id: None,
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            owned: owned
                .iter()
                .map(|(t, p)| TopicPartition::new(*t, *p))
                .collect(),
            generation: 1,
            user_data: None,
        }
    }

    #[test]
    fn subscription_and_assignment_round_trip() {
        let topics: BTreeSet<String> = ["a".to_owned(), "b".to_owned()].into();
        let owned = [TopicPartition::new("a", 1), TopicPartition::new("a", 0)];
        let bytes = encode_subscription(
            &topics,
            &owned,
            7,
            Some("r1"),
            Some(Bytes::from_static(b"ud")),
        )
        .unwrap();
        let s = decode_subscription("m".into(), None, bytes).unwrap();
        assert_eq!(s.topics, topics);
        assert_eq!(s.generation, 7);
        assert_eq!(s.user_data.as_deref(), Some(&b"ud"[..]));
        let mut got = s.owned.clone();
        got.sort();
        assert_eq!(
            got,
            [TopicPartition::new("a", 0), TopicPartition::new("a", 1)]
        );

        let bytes = encode_assignment(&owned, Some(Bytes::from_static(b"sb"))).unwrap();
        let got = decode_assignment(bytes).unwrap();
        assert_eq!(
            got.partitions,
            [TopicPartition::new("a", 0), TopicPartition::new("a", 1)]
        );
        assert_eq!(got.user_data.as_deref(), Some(&b"sb"[..]));
        assert!(
            decode_assignment(Bytes::new())
                .unwrap()
                .partitions
                .is_empty()
        );
    }

    #[test]
    fn version_zero_subscription_from_an_old_member_decodes() {
        let mut s = ConsumerProtocolSubscription::default();
        s.topics = vec![StrBytes::from_static_str("t")];
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&0i16.to_be_bytes());
        s.encode(&mut buf, 0).unwrap();
        let got = decode_subscription("m".into(), None, buf.freeze()).unwrap();
        assert_eq!(got.topics.len(), 1);
        assert_eq!(got.generation, -1);
    }

    #[test]
    fn garbage_metadata_is_an_error_not_a_panic() {
        assert!(decode_subscription("m".into(), None, Bytes::from_static(&[0])).is_err());
        assert!(
            decode_subscription(
                "m".into(),
                None,
                Bytes::from_static(&[0, 1, 0xff, 0xff, 0xff, 0x7f])
            )
            .is_err()
        );
        assert!(decode_assignment(Bytes::from_static(&[0xff, 0xff])).is_err());
    }

    fn partitions_strategy() -> impl proptest::strategy::Strategy<Value = Vec<TopicPartition>> {
        use proptest::prelude::*;
        proptest::collection::vec(("[a-z.\\-_]{1,12}", 0..1000i32), 0..24).prop_map(|v| {
            let mut v: Vec<_> = v
                .into_iter()
                .map(|(t, p)| TopicPartition::new(t, p))
                .collect();
            v.sort();
            v.dedup();
            v
        })
    }

    proptest::proptest! {
        // SyncGroup and JoinGroup metadata come from the broker (written by other members,
        // of any client): whatever their bytes, decoding returns a value or an error.
        #[test]
        fn assignments_round_trip_and_their_truncations_are_errors(
            partitions in partitions_strategy(),
            user_data in proptest::option::of(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..32)),
        ) {
            let bytes = encode_assignment(&partitions, user_data.clone().map(Bytes::from)).unwrap();
            let got = decode_assignment(bytes.clone()).unwrap();
            proptest::prop_assert_eq!(&got.partitions, &partitions);
            proptest::prop_assert_eq!(got.user_data.as_deref(), user_data.as_deref());
            for cut in 1..bytes.len() {
                proptest::prop_assert!(decode_assignment(bytes.slice(..cut)).is_err(), "prefix of {} bytes", cut);
            }
        }

        #[test]
        fn subscriptions_round_trip_and_their_truncations_are_errors(
            topics in proptest::collection::btree_set("[a-z]{1,10}", 0..8),
            owned in partitions_strategy(),
            generation in -1..1000i32,
            rack in proptest::option::of("[a-z0-9]{1,6}"),
        ) {
            let bytes = encode_subscription(&topics, &owned, generation, rack.as_deref(), None).unwrap();
            let got = decode_subscription("m".into(), None, bytes.clone()).unwrap();
            proptest::prop_assert_eq!(&got.topics, &topics);
            proptest::prop_assert_eq!(got.generation, generation);
            let mut got_owned = got.owned.clone();
            got_owned.sort();
            proptest::prop_assert_eq!(got_owned, owned);
            for cut in 0..bytes.len() {
                proptest::prop_assert!(decode_subscription("m".into(), None, bytes.slice(..cut)).is_err(), "prefix of {} bytes", cut);
            }
        }

        #[test]
        fn corrupted_metadata_decodes_or_fails_without_panicking(
            partitions in partitions_strategy(),
            flips in proptest::collection::vec((proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>()), 1..6),
            garbage in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        ) {
            let mut bytes = encode_assignment(&partitions, None).unwrap().to_vec();
            for (at, b) in flips {
                let n = bytes.len();
                bytes[at % n] ^= b;
            }
            // A decoded assignment is sorted, whatever the bytes said.
            if let Ok(a) = decode_assignment(Bytes::from(bytes.clone())) {
                proptest::prop_assert!(a.partitions.windows(2).all(|w| w[0] <= w[1]));
            }
            let _ = decode_subscription("m".into(), None, Bytes::from(bytes));
            let _ = decode_assignment(Bytes::from(garbage.clone()));
            let _ = decode_subscription("m".into(), None, Bytes::from(garbage));
        }
    }

    #[test]
    fn every_strategy_assigns_each_partition_exactly_once() {
        let members = [
            member("m1", &["a", "b"], &[]),
            member("m2", &["a", "b"], &[]),
            member("m3", &["a"], &[]),
        ];
        let partitions: BTreeMap<String, i32> = [("a".to_owned(), 5), ("b".to_owned(), 3)].into();
        for s in [
            AssignmentStrategy::Range,
            AssignmentStrategy::RoundRobin,
            AssignmentStrategy::CooperativeSticky,
        ] {
            let a = assign(s, &members, &partitions);
            let mut all: Vec<TopicPartition> = a.values().flatten().cloned().collect();
            all.sort();
            assert_eq!(all, all_partitions(&partitions), "{s:?}");
            assert!(
                a["m3"].iter().all(|tp| tp.topic == "a"),
                "{s:?}: m3 only reads a"
            );
        }
    }
}
