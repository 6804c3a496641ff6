//! Kafka wire codec: bytes in, bytes out. No IO, no async runtime, no clocks.
//!
//! - [`frame`]: 4-byte length-prefixed frames with a hard size cap checked before allocating.
//! - [`header`]: request/response header versions chosen by API key and version.
//! - [`request_frame`]: request frames that link record payloads instead of copying them.
//! - [`error`]: codec errors; [`error_code`]: the broker error-code table.
//! - [`record`]: `RecordBatch` v2 as a zero-copy view, and the `BatchBuilder`.
//! - [`messages`]: request/response structs, re-exported from the `kafka-protocol` crate.
#![warn(missing_docs)]

pub mod error;
pub mod error_code;
pub mod frame;
pub mod header;
pub mod record;
pub mod request_frame;

pub use error::{Error, ErrorCode};
pub use frame::FrameDecoder;

/// Request and response structs generated from Kafka's JSON schemas (the `kafka-protocol` crate).
pub mod messages {
    pub use kafka_protocol::messages::*;
    pub use kafka_protocol::protocol::{
        Decodable, Encodable, HeaderVersion, Message, Request, StrBytes, VersionRange,
    };
}
