//! Errors of the wire codec (frames and headers), and the broker error-code table re-exported.

pub use crate::error_code::{ERROR_TABLE, ErrorCode};

/// A failure to encode or decode a frame, a header or a message body.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The peer announced a frame longer than we accept; nothing was allocated for it.
    #[error("frame of {len} bytes exceeds the {max}-byte limit (max_frame_bytes)")]
    FrameTooLarge {
        /// The announced length.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// The peer announced a negative frame length.
    #[error("negative frame length {0}")]
    NegativeFrameLength(i32),
    /// A frame ended before its header or body was complete.
    #[error("truncated {what}: needed {needed} bytes, {available} available")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Bytes needed.
        needed: usize,
        /// Bytes present.
        available: usize,
    },
    /// An API key that kafka-protocol does not know.
    #[error("unknown API key {0}")]
    UnknownApiKey(i16),
    /// A version outside what the message type supports.
    #[error("{api} does not support version {version} (supported {min}..={max})")]
    UnsupportedVersion {
        /// API name.
        api: &'static str,
        /// Requested version.
        version: i16,
        /// Lowest supported version.
        min: i16,
        /// Highest supported version.
        max: i16,
    },
    /// kafka-protocol refused to encode a message.
    #[error("cannot encode {api} v{version}: {message}")]
    Encode {
        /// API name.
        api: &'static str,
        /// Version.
        version: i16,
        /// kafka-protocol's reason.
        message: String,
    },
    /// A response body could not be decoded.
    #[error("cannot decode {api} v{version} response: {message}")]
    Decode {
        /// API name.
        api: &'static str,
        /// Version.
        version: i16,
        /// kafka-protocol's reason.
        message: String,
    },
    /// Bytes were left over after decoding a response body.
    #[error("{api} v{version} response has {extra} trailing bytes")]
    TrailingBytes {
        /// API name.
        api: &'static str,
        /// Version.
        version: i16,
        /// Number of unread bytes.
        extra: usize,
    },
}

/// `Result` with the codec [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
