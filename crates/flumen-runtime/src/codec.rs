//! The binary form of operator state in changelog topics.
//!
//! Compact and self-delimiting: unsigned integers as LEB128 varints, signed ones zig-zag
//! encoded first, floats as their 8 little-endian bytes, strings and collections prefixed by
//! their length. Decoding reads from the front of a slice and returns `None` on anything
//! malformed or truncated; a length is never trusted for an allocation beyond the bytes left.
//!
//! ```
//! use flumen_runtime::codec::StateCodec;
//!
//! let value: (u64, Option<String>, Vec<i64>) = (7, Some("x".into()), vec![-1, 2]);
//! let mut bytes = Vec::new();
//! value.encode(&mut bytes);
//! assert_eq!(<(u64, Option<String>, Vec<i64>)>::decode_all(&bytes), Some(value));
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasher, Hash};

use hashbrown::{HashMap as HbHashMap, HashSet as HbHashSet};

/// A value an operator can write to its changelog and read back at a restore.
pub trait StateCodec: Sized {
    /// Appends the value's bytes.
    fn encode(&self, out: &mut Vec<u8>);
    /// Reads one value from the front of `input`, advancing it.
    fn decode(input: &mut &[u8]) -> Option<Self>;

    /// Reads a value that must fill `bytes` exactly.
    fn decode_all(mut bytes: &[u8]) -> Option<Self> {
        let v = Self::decode(&mut bytes)?;
        bytes.is_empty().then_some(v)
    }
}

/// Appends `v` as a LEB128 varint.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a LEB128 varint (at most 10 bytes).
pub(crate) fn get_varint(input: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..10 {
        let (&b, rest) = input.split_first()?;
        *input = rest;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

fn take<'a>(input: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if input.len() < n {
        return None;
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Some(head)
}

/// A collection's length, bounded by the bytes left (each element takes at least one).
fn get_len(input: &mut &[u8]) -> Option<usize> {
    let n = usize::try_from(get_varint(input)?).ok()?;
    (n <= input.len()).then_some(n)
}

macro_rules! unsigned {
    ($($t:ty),+) => {$(
        impl StateCodec for $t {
            fn encode(&self, out: &mut Vec<u8>) {
                put_varint(out, *self as u64);
            }
            fn decode(input: &mut &[u8]) -> Option<Self> {
                <$t>::try_from(get_varint(input)?).ok()
            }
        }
    )+};
}
unsigned!(u8, u16, u32, u64, usize);

macro_rules! signed {
    ($($t:ty),+) => {$(
        impl StateCodec for $t {
            fn encode(&self, out: &mut Vec<u8>) {
                let v = *self as i64;
                put_varint(out, ((v << 1) ^ (v >> 63)) as u64);
            }
            fn decode(input: &mut &[u8]) -> Option<Self> {
                let z = get_varint(input)?;
                let v = ((z >> 1) as i64) ^ -((z & 1) as i64);
                <$t>::try_from(v).ok()
            }
        }
    )+};
}
signed!(i8, i16, i32, i64, isize);

impl StateCodec for f64 {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn decode(input: &mut &[u8]) -> Option<Self> {
        Some(f64::from_le_bytes(take(input, 8)?.try_into().ok()?))
    }
}

impl StateCodec for f32 {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn decode(input: &mut &[u8]) -> Option<Self> {
        Some(f32::from_le_bytes(take(input, 4)?.try_into().ok()?))
    }
}

impl StateCodec for bool {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
    fn decode(input: &mut &[u8]) -> Option<Self> {
        match take(input, 1)?[0] {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }
}

impl StateCodec for String {
    fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, self.len() as u64);
        out.extend_from_slice(self.as_bytes());
    }
    fn decode(input: &mut &[u8]) -> Option<Self> {
        let n = get_len(input)?;
        String::from_utf8(take(input, n)?.to_vec()).ok()
    }
}

impl StateCodec for Box<str> {
    fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, self.len() as u64);
        out.extend_from_slice(self.as_bytes());
    }
    fn decode(input: &mut &[u8]) -> Option<Self> {
        String::decode(input).map(String::into_boxed_str)
    }
}

impl StateCodec for Box<[u8]> {
    fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, self.len() as u64);
        out.extend_from_slice(self);
    }
    fn decode(input: &mut &[u8]) -> Option<Self> {
        let n = get_len(input)?;
        Some(take(input, n)?.into())
    }
}

impl StateCodec for serde_json::Value {
    fn encode(&self, out: &mut Vec<u8>) {
        self.to_string().encode(out);
    }
    fn decode(input: &mut &[u8]) -> Option<Self> {
        serde_json::from_str(&String::decode(input)?).ok()
    }
}

impl<T: StateCodec> StateCodec for Option<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                v.encode(out);
            }
        }
    }
    fn decode(input: &mut &[u8]) -> Option<Self> {
        match take(input, 1)?[0] {
            0 => Some(None),
            1 => Some(Some(T::decode(input)?)),
            _ => None,
        }
    }
}

impl<T: StateCodec> StateCodec for Vec<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, self.len() as u64);
        for v in self {
            v.encode(out);
        }
    }
    fn decode(input: &mut &[u8]) -> Option<Self> {
        let n = get_len(input)?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(T::decode(input)?);
        }
        Some(v)
    }
}

/// Sets and maps of `std` and `hashbrown` alike: the length, then the elements (entries).
macro_rules! hashed {
    ($($set:ident, $map:ident);+) => {$(
        impl<T: StateCodec + Hash + Eq, S: BuildHasher + Default> StateCodec for $set<T, S> {
            fn encode(&self, out: &mut Vec<u8>) {
                put_varint(out, self.len() as u64);
                for v in self {
                    v.encode(out);
                }
            }
            fn decode(input: &mut &[u8]) -> Option<Self> {
                let n = get_len(input)?;
                let mut set = $set::with_capacity_and_hasher(n, S::default());
                for _ in 0..n {
                    set.insert(T::decode(input)?);
                }
                Some(set)
            }
        }

        impl<K, V, S> StateCodec for $map<K, V, S>
        where
            K: StateCodec + Hash + Eq,
            V: StateCodec,
            S: BuildHasher + Default,
        {
            fn encode(&self, out: &mut Vec<u8>) {
                put_varint(out, self.len() as u64);
                for (k, v) in self {
                    k.encode(out);
                    v.encode(out);
                }
            }
            fn decode(input: &mut &[u8]) -> Option<Self> {
                let n = get_len(input)?;
                let mut map = $map::with_capacity_and_hasher(n, S::default());
                for _ in 0..n {
                    let k = K::decode(input)?;
                    map.insert(k, V::decode(input)?);
                }
                Some(map)
            }
        }
    )+};
}
hashed!(HashSet, HashMap; HbHashSet, HbHashMap);

impl<K: StateCodec + Ord, V: StateCodec> StateCodec for BTreeMap<K, V> {
    fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, self.len() as u64);
        for (k, v) in self {
            k.encode(out);
            v.encode(out);
        }
    }
    fn decode(input: &mut &[u8]) -> Option<Self> {
        let n = get_len(input)?;
        let mut map = BTreeMap::new();
        for _ in 0..n {
            let k = K::decode(input)?;
            map.insert(k, V::decode(input)?);
        }
        Some(map)
    }
}

macro_rules! tuple {
    ($($name:ident $idx:tt),+) => {
        impl<$($name: StateCodec),+> StateCodec for ($($name,)+) {
            fn encode(&self, out: &mut Vec<u8>) {
                $(self.$idx.encode(out);)+
            }
            fn decode(input: &mut &[u8]) -> Option<Self> {
                Some(($($name::decode(input)?,)+))
            }
        }
    };
}
tuple!(A 0);
tuple!(A 0, B 1);
tuple!(A 0, B 1, C 2);
tuple!(A 0, B 1, C 2, D 3);
tuple!(A 0, B 1, C 2, D 3, E 4);
tuple!(A 0, B 1, C 2, D 3, E 4, G 5);
tuple!(A 0, B 1, C 2, D 3, E 4, G 5, H 6);
tuple!(A 0, B 1, C 2, D 3, E 4, G 5, H 6, I 7);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip<T: StateCodec + PartialEq + std::fmt::Debug>(v: T) {
        let mut bytes = Vec::new();
        v.encode(&mut bytes);
        assert_eq!(T::decode_all(&bytes), Some(v));
    }

    proptest! {
        #[test]
        fn integers_strings_and_collections_round_trip(
            a in any::<u64>(), b in any::<i64>(), c in any::<i32>(), s in ".*",
            v in proptest::collection::vec(any::<i64>(), 0..20),
            m in proptest::collection::hash_map(".{0,8}", any::<u64>(), 0..10),
            o in proptest::option::of(any::<u16>()),
        ) {
            round_trip(a);
            round_trip(b);
            round_trip(c);
            round_trip(s.clone());
            round_trip(v);
            round_trip(m);
            round_trip(o);
            round_trip((a, s, b));
        }

        #[test]
        fn arbitrary_bytes_decode_to_a_value_or_none_without_panicking(
            bytes in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let _ = <(u64, String, Vec<i64>)>::decode_all(&bytes);
            let _ = <HashMap<String, Vec<u32>>>::decode_all(&bytes);
            let _ = <Option<(f64, bool)>>::decode_all(&bytes);
        }
    }

    #[test]
    fn a_length_beyond_the_bytes_left_is_refused_without_allocating() {
        let mut bytes = Vec::new();
        put_varint(&mut bytes, u64::MAX >> 1);
        assert_eq!(Vec::<u8>::decode_all(&bytes), None);
        assert_eq!(String::decode_all(&bytes), None);
        assert_eq!(f64::decode_all(&[1, 2, 3]), None);
        assert_eq!(bool::decode_all(&[2]), None);
        // Eleven continuation bytes: not a varint.
        assert_eq!(u64::decode_all(&[0xff; 11]), None);
    }

    #[test]
    fn floats_keep_their_bits() {
        round_trip(f64::MIN_POSITIVE);
        round_trip(-0.5f64);
        round_trip(i64::MIN);
        round_trip(u64::MAX);
    }
}
