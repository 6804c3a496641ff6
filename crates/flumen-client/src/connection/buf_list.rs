//! A queue of `Bytes` seen as one `Buf`, so a batch of request frames goes out in vectored writes without copying.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes};

/// Frames waiting to be written, front first.
#[derive(Debug, Default)]
pub(crate) struct BufList {
    bufs: VecDeque<Bytes>,
    remaining: usize,
}

impl BufList {
    pub(crate) fn push(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.remaining += bytes.len();
            self.bufs.push_back(bytes);
        }
    }
}

impl Buf for BufList {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.bufs.front().map(|b| &b[..]).unwrap_or_default()
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, buf) in dst.iter_mut().zip(&self.bufs) {
            *slot = IoSlice::new(buf);
            n += 1;
        }
        n
    }

    fn advance(&mut self, mut cnt: usize) {
        assert!(cnt <= self.remaining, "advance past the end of a BufList");
        self.remaining -= cnt;
        while cnt > 0 {
            let Some(front) = self.bufs.front_mut() else {
                break;
            };
            if cnt < front.len() {
                front.advance(cnt);
                break;
            }
            cnt -= front.len();
            self.bufs.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advances_across_buffers() {
        let mut list = BufList::default();
        list.push(Bytes::from_static(b"abc"));
        list.push(Bytes::new());
        list.push(Bytes::from_static(b"defg"));
        assert_eq!(list.remaining(), 7);
        let mut slices = [IoSlice::new(&[]); 4];
        assert_eq!(list.chunks_vectored(&mut slices), 2);
        list.advance(4);
        assert_eq!(list.chunk(), b"efg");
        assert_eq!(list.copy_to_bytes(3), Bytes::from_static(b"efg"));
        assert_eq!(list.remaining(), 0);
    }
}
