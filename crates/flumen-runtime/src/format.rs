//! Record formats: how value bytes become the items a pipeline works on, and back.
//!
//! Items are described by a [`Family`]: the type an item has for a given borrow of the fetched
//! data. [`Utf8`] items are `&str` views straight into the fetched batch, [`Bytes`] items are
//! `&[u8]` views, and [`Json`] items are owned values. A pipeline stays on borrowed views until
//! an operator returns an owned value (the first `map`), so `filter` and `map` over a borrowed
//! format allocate nothing per record.
//!
//! A user format implements [`Decode`] (for sources) and [`Encode`] (for sinks).

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// What a format could not read or write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FormatError(pub String);

impl FormatError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        FormatError(message.into())
    }
}

/// The type of a pipeline's items, for every borrow of the data they may point into.
pub trait Family: 'static {
    /// The item, borrowing from data that lives for `'a`.
    type Item<'a>;
}

/// Items that own their data: `T` whatever the borrow.
pub struct Owned<T>(PhantomData<fn() -> T>);

impl<T: 'static> Family for Owned<T> {
    type Item<'a> = T;
}

/// Items that are byte slices of the fetched batch.
pub struct BytesView;

impl Family for BytesView {
    type Item<'a> = &'a [u8];
}

/// Items that are UTF-8 string slices of the fetched batch.
pub struct StrView;

impl Family for StrView {
    type Item<'a> = &'a str;
}

/// Turns a record value into an item.
pub trait Decode: Clone + Send + Sync + 'static {
    /// The items it makes.
    type Family: Family;

    /// Decodes `value` (`None`: the record has a null value, a tombstone).
    fn decode<'a>(
        &self,
        value: Option<&'a [u8]>,
    ) -> Result<<Self::Family as Family>::Item<'a>, FormatError>;

    /// Decodes a value of a record read from `topic` (formats that read several topics
    /// differently, such as a two-stream join's, look at it; others ignore it).
    #[inline]
    fn decode_from<'a>(
        &self,
        topic: &str,
        value: Option<&'a [u8]>,
    ) -> Result<<Self::Family as Family>::Item<'a>, FormatError> {
        let _ = topic;
        self.decode(value)
    }

    /// The event time of `item`, whose record has the timestamp `record_time`: the record's
    /// timestamp unless a source sets an extractor ([`crate::KafkaSource::timestamps`]).
    #[inline]
    fn timestamp(&self, _item: &<Self::Family as Family>::Item<'_>, record_time: i64) -> i64 {
        record_time
    }
}

/// A format whose items carry their own event time: `T` reads it from each decoded item.
pub struct Timestamped<D, T> {
    pub(crate) inner: D,
    pub(crate) extract: T,
}

impl<D: Clone, T: Clone> Clone for Timestamped<D, T> {
    fn clone(&self) -> Self {
        Timestamped {
            inner: self.inner.clone(),
            extract: self.extract.clone(),
        }
    }
}

impl<D: std::fmt::Debug, T> std::fmt::Debug for Timestamped<D, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timestamped")
            .field("format", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<D, T> Decode for Timestamped<D, T>
where
    D: Decode,
    T: for<'a, 'b> Fn(&'b <D::Family as Family>::Item<'a>) -> i64 + Clone + Send + Sync + 'static,
{
    type Family = D::Family;

    #[inline]
    fn decode<'a>(
        &self,
        value: Option<&'a [u8]>,
    ) -> Result<<Self::Family as Family>::Item<'a>, FormatError> {
        self.inner.decode(value)
    }

    #[inline]
    fn timestamp(&self, item: &<Self::Family as Family>::Item<'_>, _: i64) -> i64 {
        (self.extract)(item)
    }
}

/// Turns an item of family `F` into record value bytes.
pub trait Encode<F: Family>: Clone + Send + Sync + 'static {
    /// The value bytes of `item`: a slice of the item itself where it holds them already, or
    /// of `scratch` (cleared by the caller) where they have to be written out.
    fn encode<'b>(
        &self,
        item: &'b F::Item<'_>,
        scratch: &'b mut Vec<u8>,
    ) -> Result<&'b [u8], FormatError>;
}

/// Raw bytes, unchanged (a null value reads as empty).
#[derive(Clone, Copy, Debug, Default)]
pub struct Bytes;

impl Decode for Bytes {
    type Family = BytesView;

    #[inline]
    fn decode<'a>(&self, value: Option<&'a [u8]>) -> Result<&'a [u8], FormatError> {
        Ok(value.unwrap_or_default())
    }
}

impl Encode<BytesView> for Bytes {
    #[inline]
    fn encode<'b>(&self, item: &'b &[u8], _: &'b mut Vec<u8>) -> Result<&'b [u8], FormatError> {
        Ok(item)
    }
}

impl Encode<Owned<Vec<u8>>> for Bytes {
    #[inline]
    fn encode<'b>(&self, item: &'b Vec<u8>, _: &'b mut Vec<u8>) -> Result<&'b [u8], FormatError> {
        Ok(item)
    }
}

impl Encode<Owned<::bytes::Bytes>> for Bytes {
    #[inline]
    fn encode<'b>(
        &self,
        item: &'b ::bytes::Bytes,
        _: &'b mut Vec<u8>,
    ) -> Result<&'b [u8], FormatError> {
        Ok(item)
    }
}

/// UTF-8 text (a null value reads as the empty string; invalid UTF-8 is an error).
#[derive(Clone, Copy, Debug, Default)]
pub struct Utf8;

impl Decode for Utf8 {
    type Family = StrView;

    #[inline]
    fn decode<'a>(&self, value: Option<&'a [u8]>) -> Result<&'a str, FormatError> {
        std::str::from_utf8(value.unwrap_or_default())
            .map_err(|e| FormatError(format!("not UTF-8: {e}")))
    }
}

impl Encode<StrView> for Utf8 {
    #[inline]
    fn encode<'b>(&self, item: &'b &str, _: &'b mut Vec<u8>) -> Result<&'b [u8], FormatError> {
        Ok(item.as_bytes())
    }
}

impl Encode<Owned<String>> for Utf8 {
    #[inline]
    fn encode<'b>(&self, item: &'b String, _: &'b mut Vec<u8>) -> Result<&'b [u8], FormatError> {
        Ok(item.as_bytes())
    }
}

/// JSON through serde: values decode into `T` (by default a [`serde_json::Value`]); any
/// `Serialize` item encodes.
pub struct Json<T = serde_json::Value>(PhantomData<fn() -> T>);

impl<T> Json<T> {
    /// The JSON format for `T`.
    pub fn new() -> Self {
        Json(PhantomData)
    }
}

impl<T> Default for Json<T> {
    fn default() -> Self {
        Json::new()
    }
}

impl<T> Clone for Json<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Json<T> {}

impl<T> std::fmt::Debug for Json<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Json<{}>", std::any::type_name::<T>())
    }
}

impl<T: DeserializeOwned + 'static> Decode for Json<T> {
    type Family = Owned<T>;

    fn decode(&self, value: Option<&[u8]>) -> Result<T, FormatError> {
        let bytes = value.ok_or_else(|| FormatError::new("null value, expected JSON"))?;
        serde_json::from_slice(bytes).map_err(|e| FormatError(format!("invalid JSON: {e}")))
    }
}

impl<T: 'static, U: Serialize + 'static> Encode<Owned<U>> for Json<T> {
    fn encode<'b>(&self, item: &'b U, scratch: &'b mut Vec<u8>) -> Result<&'b [u8], FormatError> {
        serde_json::to_writer(&mut *scratch, item)
            .map_err(|e| FormatError(format!("cannot write JSON: {e}")))?;
        Ok(scratch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_borrows_the_value_and_rejects_invalid_bytes() {
        let data = b"hello".to_vec();
        let s = Utf8.decode(Some(&data)).expect("utf-8");
        assert_eq!(s.as_ptr(), data.as_ptr());
        assert_eq!(Utf8.decode(None).expect("null"), "");
        let e = Utf8.decode(Some(&[0xff, 0xfe])).expect_err("invalid");
        assert!(e.0.contains("not UTF-8"), "{e}");
    }

    #[test]
    fn json_round_trips_and_names_the_problem() {
        let v: serde_json::Value = Json::<serde_json::Value>::new()
            .decode(Some(br#"{"a":1}"#))
            .expect("json");
        let mut scratch = Vec::new();
        let out = Json::<serde_json::Value>::new()
            .encode(&v, &mut scratch)
            .expect("encode");
        assert_eq!(out, br#"{"a":1}"#);
        let e = Json::<serde_json::Value>::new()
            .decode(Some(b"{nope"))
            .expect_err("bad");
        assert!(e.0.starts_with("invalid JSON"), "{e}");
        assert!(Json::<serde_json::Value>::new().decode(None).is_err());
    }

    #[test]
    fn bytes_encode_without_copying() {
        let v = b"abc".to_vec();
        let mut scratch = Vec::new();
        let item: &[u8] = &v;
        let out = <Bytes as Encode<BytesView>>::encode(&Bytes, &item, &mut scratch).expect("ok");
        assert_eq!(out.as_ptr(), v.as_ptr());
        assert!(scratch.is_empty());
    }
}
