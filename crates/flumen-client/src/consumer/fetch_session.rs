//! KIP-227 incremental fetch sessions: send only what changed since the last fetch.
//!
//! The first request of a session is full (session id 0, epoch 0) and lists every partition.
//! When the broker answers with a session id, later requests carry that id and the next
//! epoch, and list only partitions that are new or whose fetch offset or size changed;
//! partitions no longer wanted go in `forgotten_topics_data`. The broker answers
//! incrementally too: only partitions with data or an error. Any failure (a session error,
//! a lost connection) starts a new full session, which is always correct.
//!
//! # References
//! KIP-227 (incremental fetch requests).

use std::collections::{BTreeMap, HashMap};

use flumen_protocol::messages::StrBytes;
use flumen_protocol::messages::TopicName;
use flumen_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};

use crate::cluster::TopicPartition;

/// What a fetcher wants for one partition in the next request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Want {
    pub(crate) fetch_offset: i64,
    pub(crate) leader_epoch: i32,
    pub(crate) max_bytes: i32,
}

/// The client side of one fetch session (one per broker).
#[derive(Debug, Default)]
pub(crate) struct FetchSession {
    id: i32,
    epoch: i32,
    /// What the broker's session holds for each partition (as last sent).
    sent: HashMap<TopicPartition, Want>,
}

/// The session fields and partition lists of one request.
#[derive(Debug)]
pub(crate) struct SessionRequest {
    pub(crate) session_id: i32,
    pub(crate) session_epoch: i32,
    pub(crate) topics: Vec<FetchTopic>,
    pub(crate) forgotten: Vec<ForgottenTopic>,
    /// Whether this is a full request (the response lists every partition).
    pub(crate) full: bool,
}

impl FetchSession {
    /// Whether a session is established (the next request can be incremental).
    #[cfg(test)]
    pub(crate) fn is_established(&self) -> bool {
        self.id != 0
    }

    /// The partitions to put in the next request for the wanted set `want`.
    pub(crate) fn build(&mut self, want: &BTreeMap<TopicPartition, Want>) -> SessionRequest {
        let full = self.id == 0;
        let mut listed: BTreeMap<&str, Vec<FetchPartition>> = BTreeMap::new();
        for (tp, w) in want {
            if !full && self.sent.get(tp) == Some(w) {
                continue;
            }
            let mut p = FetchPartition::default();
            p.partition = tp.partition;
            p.current_leader_epoch = w.leader_epoch;
            p.fetch_offset = w.fetch_offset;
            p.last_fetched_epoch = -1;
            p.log_start_offset = -1;
            p.partition_max_bytes = w.max_bytes;
            listed.entry(tp.topic.as_str()).or_default().push(p);
        }
        let mut forgotten: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        if !full {
            for tp in self.sent.keys() {
                if !want.contains_key(tp) {
                    forgotten
                        .entry(tp.topic.as_str())
                        .or_default()
                        .push(tp.partition);
                }
            }
        }
        let topics = listed
            .into_iter()
            .map(|(topic, partitions)| {
                let mut t = FetchTopic::default();
                t.topic = TopicName(StrBytes::from_string(topic.to_owned()));
                t.partitions = partitions;
                t
            })
            .collect();
        let forgotten = forgotten
            .into_iter()
            .map(|(topic, partitions)| {
                let mut t = ForgottenTopic::default();
                t.topic = TopicName(StrBytes::from_string(topic.to_owned()));
                t.partitions = partitions;
                t
            })
            .collect();
        let request = SessionRequest {
            session_id: self.id,
            session_epoch: self.epoch,
            topics,
            forgotten,
            full,
        };
        // What the broker will hold once it accepts this request.
        self.sent = want.clone().into_iter().collect();
        request
    }

    /// Learns from a successful response to a request built with `full`.
    pub(crate) fn on_response(&mut self, full: bool, response_session_id: i32) {
        if full {
            if response_session_id == 0 {
                // The broker keeps no session for us: every request stays full.
                self.reset();
            } else {
                self.id = response_session_id;
                self.epoch = 1;
            }
        } else {
            self.epoch = if self.epoch == i32::MAX {
                1
            } else {
                self.epoch + 1
            };
        }
    }

    /// Starts over with a full request (after a session error or a failed request).
    pub(crate) fn reset(&mut self) {
        self.id = 0;
        self.epoch = 0;
        self.sent.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(offset: i64) -> Want {
        Want {
            fetch_offset: offset,
            leader_epoch: -1,
            max_bytes: 100,
        }
    }

    fn listed(r: &SessionRequest) -> Vec<(String, i32, i64)> {
        r.topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(move |p| (t.topic.0.to_string(), p.partition, p.fetch_offset))
            })
            .collect()
    }

    #[test]
    fn incremental_requests_list_only_changes_and_forget_removed_partitions() {
        let mut s = FetchSession::default();
        let mut w = BTreeMap::new();
        w.insert(TopicPartition::new("a", 0), want(5));
        w.insert(TopicPartition::new("a", 1), want(7));
        let first = s.build(&w);
        assert!(first.full);
        assert_eq!((first.session_id, first.session_epoch), (0, 0));
        assert_eq!(listed(&first).len(), 2);
        s.on_response(true, 42);
        assert!(s.is_established());

        // Partition 0 moved on; partition 1 did not; a new partition 2 appears.
        w.insert(TopicPartition::new("a", 0), want(9));
        w.insert(TopicPartition::new("a", 2), want(0));
        let second = s.build(&w);
        assert!(!second.full);
        assert_eq!((second.session_id, second.session_epoch), (42, 1));
        assert_eq!(listed(&second), [("a".into(), 0, 9), ("a".into(), 2, 0)]);
        assert!(second.forgotten.is_empty());
        s.on_response(false, 42);

        // Partition 1 is paused: it is forgotten, nothing else is sent.
        w.remove(&TopicPartition::new("a", 1));
        let third = s.build(&w);
        assert_eq!(third.session_epoch, 2);
        assert!(listed(&third).is_empty());
        assert_eq!(third.forgotten.len(), 1);
        assert_eq!(third.forgotten[0].partitions, [1]);
    }

    #[test]
    fn reset_makes_the_next_request_full() {
        let mut s = FetchSession::default();
        let mut w = BTreeMap::new();
        w.insert(TopicPartition::new("a", 0), want(5));
        s.build(&w);
        s.on_response(true, 7);
        s.reset();
        let r = s.build(&w);
        assert!(r.full);
        assert_eq!((r.session_id, r.session_epoch), (0, 0));
        assert_eq!(listed(&r).len(), 1);
    }

    #[test]
    fn broker_without_sessions_keeps_full_requests() {
        let mut s = FetchSession::default();
        let mut w = BTreeMap::new();
        w.insert(TopicPartition::new("a", 0), want(5));
        s.build(&w);
        s.on_response(true, 0);
        assert!(s.build(&w).full);
    }
}
