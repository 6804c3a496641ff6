//! Control records: the transaction markers (commit/abort) brokers write into control batches.
//!
//! A control record's key is `version i16 | type i16` (type 0 = abort, 1 = commit; KRaft adds
//! other types to its own metadata log). The value of a commit/abort marker is
//! `version i16 | coordinatorEpoch i32` (`EndTransactionMarker`); later versions may append
//! fields, which are ignored, as the Java client does.

use super::error::{RecordError, Result};
use super::records::RecordRef;

/// The kind of a control record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ControlRecordType {
    /// The transaction's records before this marker are aborted.
    Abort,
    /// The transaction's records before this marker are committed.
    Commit,
    /// Any other type (KRaft metadata control records such as leader changes).
    Other(i16),
}

impl ControlRecordType {
    /// The wire value of the type.
    pub fn id(self) -> i16 {
        match self {
            Self::Abort => 0,
            Self::Commit => 1,
            Self::Other(id) => id,
        }
    }

    fn from_id(id: i16) -> Self {
        match id {
            0 => Self::Abort,
            1 => Self::Commit,
            other => Self::Other(other),
        }
    }
}

/// A decoded control record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ControlRecord {
    /// Version of the control record key.
    pub key_version: i16,
    /// What the record marks.
    pub kind: ControlRecordType,
    /// For commit/abort markers: the marker value's version and the coordinator epoch.
    pub marker: Option<EndTransactionMarker>,
}

/// The value of a commit or abort marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EndTransactionMarker {
    /// Version of the marker value.
    pub version: i16,
    /// Epoch of the transaction coordinator that wrote it.
    pub coordinator_epoch: i32,
}

impl ControlRecord {
    /// Decodes the control record carried by `record` (which must come from a control batch).
    /// Error offsets are relative to the record's key or value.
    pub fn parse(record: &RecordRef<'_>) -> Result<Self> {
        Self::from_parts(record.key(), record.value())
    }

    /// Decodes a control record from its raw key and value.
    pub fn from_parts(key: Option<&[u8]>, value: Option<&[u8]>) -> Result<Self> {
        let bad = |reason| RecordError::MalformedControlRecord { offset: 0, reason };
        let key = key.ok_or(bad("null key"))?;
        let [v0, v1, t0, t1, ..] = *key else {
            return Err(bad("key shorter than 4 bytes"));
        };
        let key_version = i16::from_be_bytes([v0, v1]);
        if key_version < 0 {
            return Err(bad("negative key version"));
        }
        let kind = ControlRecordType::from_id(i16::from_be_bytes([t0, t1]));
        let marker = match kind {
            ControlRecordType::Abort | ControlRecordType::Commit => {
                let value = value.ok_or(bad("null marker value"))?;
                let [v0, v1, e0, e1, e2, e3, ..] = *value else {
                    return Err(bad("marker value shorter than 6 bytes"));
                };
                let version = i16::from_be_bytes([v0, v1]);
                if version < 0 {
                    return Err(bad("negative marker version"));
                }
                Some(EndTransactionMarker {
                    version,
                    coordinator_epoch: i32::from_be_bytes([e0, e1, e2, e3]),
                })
            }
            ControlRecordType::Other(_) => None,
        };
        Ok(Self {
            key_version,
            kind,
            marker,
        })
    }

    /// The record key for a commit/abort marker (version 0).
    pub fn marker_key(kind: ControlRecordType) -> [u8; 4] {
        let t = kind.id().to_be_bytes();
        [0, 0, t[0], t[1]]
    }

    /// The record value for a commit/abort marker (version 0).
    pub fn marker_value(coordinator_epoch: i32) -> [u8; 6] {
        let e = coordinator_epoch.to_be_bytes();
        [0, 0, e[0], e[1], e[2], e[3]]
    }
}
