//! `RecordBatches`: iterates the batches of a fetched `records` blob, tolerating a partial last batch.
//!
//! Brokers fill a fetch response up to its byte limit and may cut the last batch short; that
//! tail is not an error. It is left unread, and [`RecordBatches::partial_tail`] reports it so a
//! consumer can tell "the next batch is larger than my fetch size" from "nothing more".

use bytes::Bytes;

use super::batch::{BATCH_LENGTH_OFFSET, HEADER_LEN, LOG_OVERHEAD, RecordBatch, read_array};
use super::error::Result;

/// Iterator over the record batches in a buffer. Yields `Err` once and stops on malformed input.
#[derive(Debug, Clone)]
pub struct RecordBatches {
    buf: Bytes,
    pos: usize,
    failed: bool,
}

impl RecordBatches {
    /// Iterates the batches of `buf` (a fetch response partition's `records`).
    pub fn new(buf: Bytes) -> Self {
        Self {
            buf,
            pos: 0,
            failed: false,
        }
    }

    /// Byte position of the next batch in the blob.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Once iteration has ended: the bytes of an incomplete last batch (0 if none).
    pub fn partial_tail(&self) -> usize {
        self.buf.len() - self.pos
    }
}

impl Iterator for RecordBatches {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let rest = &self.buf[self.pos..];
        if rest.len() < LOG_OVERHEAD {
            return None;
        }
        let length = i32::from_be_bytes(read_array(rest, BATCH_LENGTH_OFFSET));
        // A length too small for any batch is corruption, not truncation.
        if length >= (HEADER_LEN - LOG_OVERHEAD) as i32
            && rest.len() < LOG_OVERHEAD + length as usize
        {
            return None;
        }
        match RecordBatch::frame_len(rest) {
            Ok(total) => {
                let batch = RecordBatch::from_validated(self.buf.slice(self.pos..self.pos + total));
                self.pos += total;
                Some(Ok(batch))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e.rebase(self.pos)))
            }
        }
    }
}
