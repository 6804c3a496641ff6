//! The source of a pipeline file whose first stage is a `key_by` and nothing else, reading
//! JSON: each record is read once for its key and event time, without building a `Value`,
//! and its bytes go to the repartition topic unchanged. The stage after the repartition
//! parses them, so a record is parsed once instead of parsed, written out and parsed again.
//!
//! What it reads matches [`ValueFormat`] and
//! [`Path::get`](super::value::Path::get) on the parsed value: the same records are refused
//! (with the same messages), the key is the field's [`text`] (the last
//! of duplicate fields, as the parsed object keeps it), and the event time is the field when
//! it is an integer that fits an `i64`, else the record's time.

use std::borrow::Cow;
use std::fmt;

use flumen_runtime::format::{Decode, Encode, Family, FormatError};
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::value::{ValueFormat, ValueSeed, text};

/// Items of [`RawFormat`]: a record's bytes with what was read of them.
pub struct RawJson;

impl Family for RawJson {
    type Item<'a> = Raw<'a>;
}

/// A JSON record, its key and its event time.
#[derive(Debug, PartialEq)]
pub struct Raw<'a> {
    pub bytes: &'a [u8],
    /// The key field's text; empty without one.
    pub key: Cow<'a, str>,
    /// The timestamp field, when it is an integer that fits an `i64`.
    pub ts: Option<i64>,
}

/// Reads JSON records for their `key` field and their `ts` field (each a top-level field,
/// or an element index of a top-level array).
#[derive(Clone, Debug)]
pub struct RawFormat {
    pub key: String,
    pub ts: Option<String>,
}

impl Decode for RawFormat {
    type Family = RawJson;

    fn decode<'a>(&self, value: Option<&'a [u8]>) -> Result<Raw<'a>, FormatError> {
        let bytes = value.ok_or_else(|| FormatError::new("null value, expected JSON"))?;
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let scan = Scan {
            key: &self.key,
            ts: self.ts.as_deref(),
        };
        let (key, ts) = scan
            .deserialize(&mut de)
            .and_then(|found| de.end().map(|()| found))
            .map_err(|e| FormatError(format!("invalid JSON: {e}")))?;
        Ok(Raw {
            bytes,
            key: key.unwrap_or_default(),
            ts,
        })
    }

    fn timestamp(&self, item: &Raw<'_>, record_time: i64) -> i64 {
        item.ts.unwrap_or(record_time)
    }
}

/// The repartition after such a source writes the record's bytes as they came.
impl Encode<RawJson> for ValueFormat {
    fn encode<'b>(&self, item: &'b Raw<'_>, _: &'b mut Vec<u8>) -> Result<&'b [u8], FormatError> {
        Ok(item.bytes)
    }
}

/// What [`Scan`] finds: the key's text and the timestamp.
type Found<'de> = (Option<Cow<'de, str>>, Option<i64>);

/// Walks a whole JSON value (so that invalid JSON is refused), reading the two fields.
struct Scan<'p> {
    key: &'p str,
    ts: Option<&'p str>,
}

impl<'de> DeserializeSeed<'de> for Scan<'_> {
    type Value = Found<'de>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Found<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Scan<'_> {
    type Value = Found<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Found<'de>, E> {
        Ok((None, None))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Found<'de>, E> {
        Ok((None, None))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Found<'de>, E> {
        Ok((None, None))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Found<'de>, E> {
        Ok((None, None))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Found<'de>, E> {
        Ok((None, None))
    }

    fn visit_str<E>(self, _: &str) -> Result<Found<'de>, E> {
        Ok((None, None))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Found<'de>, A::Error> {
        let index = |name: Option<&str>| name.and_then(|n| n.parse::<usize>().ok());
        let (key_at, ts_at) = (index(Some(self.key)), index(self.ts));
        let (mut key, mut ts) = (None, None);
        let mut i = 0;
        loop {
            let (want_key, want_ts) = (key_at == Some(i), ts_at == Some(i));
            if want_key || want_ts {
                let Some((k, t)) = seq.next_element_seed(FieldSeed { want_key, want_ts })? else {
                    break;
                };
                if want_key {
                    key = k;
                }
                if want_ts {
                    ts = t;
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                break;
            }
            i += 1;
        }
        Ok((key, ts))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Found<'de>, A::Error> {
        let (mut key, mut ts) = (None, None);
        while let Some(name) = map.next_key_seed(NameSeed)? {
            let want_key = name == self.key;
            let want_ts = self.ts == Some(&*name);
            if want_key || want_ts {
                let (k, t) = map.next_value_seed(FieldSeed { want_key, want_ts })?;
                // The last of duplicate fields, as the parsed object keeps it.
                if want_key {
                    key = k;
                }
                if want_ts {
                    ts = t;
                }
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok((key, ts))
    }
}

/// A field name, borrowed unless it has escapes.
struct NameSeed;

impl<'de> DeserializeSeed<'de> for NameSeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for NameSeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(s))
    }

    fn visit_str<E>(self, s: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(s))
    }
}

/// The value of a wanted field: its text when it is the key, its integer when it is the
/// timestamp.
struct FieldSeed {
    want_key: bool,
    want_ts: bool,
}

impl FieldSeed {
    /// The text of a value that is not a string, as [`text`] writes it.
    fn key_of(&self, v: impl FnOnce() -> Value) -> Option<Cow<'static, str>> {
        self.want_key.then(|| Cow::Owned(text(&v()).into_owned()))
    }
}

impl<'de> DeserializeSeed<'de> for FieldSeed {
    type Value = Found<'de>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Found<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FieldSeed {
    type Value = Found<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Found<'de>, E> {
        Ok((self.key_of(|| Value::Null), None))
    }

    fn visit_bool<E>(self, b: bool) -> Result<Found<'de>, E> {
        Ok((self.key_of(|| Value::Bool(b)), None))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Found<'de>, E> {
        Ok((self.key_of(|| Value::from(n)), self.want_ts.then_some(n)))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Found<'de>, E> {
        let ts = i64::try_from(n).ok().filter(|_| self.want_ts);
        Ok((self.key_of(|| Value::from(n)), ts))
    }

    fn visit_f64<E>(self, x: f64) -> Result<Found<'de>, E> {
        let v = || serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number);
        Ok((self.key_of(v), None))
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Found<'de>, E> {
        Ok((self.want_key.then_some(Cow::Borrowed(s)), None))
    }

    fn visit_str<E>(self, s: &str) -> Result<Found<'de>, E> {
        Ok((self.want_key.then(|| Cow::Owned(s.to_owned())), None))
    }

    fn visit_string<E>(self, s: String) -> Result<Found<'de>, E> {
        Ok((self.want_key.then_some(Cow::Owned(s)), None))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Found<'de>, A::Error> {
        let v = ValueSeed.visit_seq(seq)?;
        Ok((self.key_of(|| v), None))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Found<'de>, A::Error> {
        let v = ValueSeed.visit_map(map)?;
        Ok((self.key_of(|| v), None))
    }
}

#[cfg(test)]
mod tests {
    use super::super::value::{Kind, Path};
    use super::*;

    /// What the `Value` path finds for the key and the timestamp of `json`, or its error.
    fn by_value(json: &str, key: &str, ts: Option<&str>) -> Result<(String, i64), String> {
        let format = ValueFormat {
            kind: Kind::Json,
            timestamp: ts.map(|t| std::sync::Arc::new(Path::parse(t))),
            unread: false,
        };
        let v = format.decode(Some(json.as_bytes())).map_err(|e| e.0)?;
        let key = Path::parse(key)
            .get(&v)
            .map(|k| text(k).into_owned())
            .unwrap_or_default();
        Ok((key, format.timestamp(&v, -7)))
    }

    fn by_scan(json: &str, key: &str, ts: Option<&str>) -> Result<(String, i64), String> {
        let format = RawFormat {
            key: key.to_owned(),
            ts: ts.map(str::to_owned),
        };
        let raw = format.decode(Some(json.as_bytes())).map_err(|e| e.0)?;
        assert_eq!(raw.bytes, json.as_bytes());
        let ts = format.timestamp(&raw, -7);
        Ok((raw.key.into_owned(), ts))
    }

    #[test]
    fn key_and_time_are_what_the_parsed_value_gives() {
        let cases = [
            r#"{"url":"/a","ts":1700000000000,"user":"u1"}"#,
            r#"{"ts":-5,"url":"/b\"q\u00e9"}"#,
            r#"{"url":7,"ts":1.5}"#,
            r#"{"url":1.50,"ts":"12"}"#,
            r#"{"url":18446744073709551615,"ts":18446744073709551615}"#,
            r#"{"url":{"b":[1,2.0,"x"],"a":null},"ts":3}"#,
            r#"{"url":[true,false],"ts":null}"#,
            r#"{"url":null}"#,
            r#"{"url":"first","url":"second","ts":1,"ts":2}"#,
            r#"{"u\u0072l":"escaped name","ts":4}"#,
            r#"{"other":{"url":"nested"}}"#,
            r#"["/x", 99]"#,
            r#""just a string""#,
            "42",
            "null",
            "{}",
            " { \"url\" : \"/spaced\" , \"ts\" : 9 } ",
        ];
        for json in cases {
            for (key, ts) in [
                ("url", Some("ts")),
                ("url", None),
                ("ts", Some("ts")),
                ("0", Some("1")),
            ] {
                assert_eq!(
                    by_scan(json, key, ts),
                    by_value(json, key, ts),
                    "{json} with key {key}, ts {ts:?}"
                );
            }
        }
    }

    #[test]
    fn invalid_json_is_refused_with_the_parsed_value_s_message() {
        for json in [
            "",
            "{",
            r#"{"url":"/a"} x"#,
            r#"{"url":}"#,
            "[1,]",
            "nul",
            "\"\\x\"",
        ] {
            let (scan, value) = (
                by_scan(json, "url", Some("ts")),
                by_value(json, "url", Some("ts")),
            );
            assert!(scan.is_err(), "{json:?} accepted: {scan:?}");
            assert_eq!(scan, value, "{json:?}");
        }
        let null = RawFormat {
            key: "url".to_owned(),
            ts: None,
        }
        .decode(None)
        .unwrap_err();
        assert_eq!(null.0, "null value, expected JSON");
    }

    #[test]
    fn the_repartition_writes_the_bytes_unchanged() {
        let json = br#"{ "url": "/a",  "n": 1.50 }"#;
        let raw = RawFormat {
            key: "url".to_owned(),
            ts: None,
        }
        .decode(Some(json))
        .unwrap();
        let mut scratch = Vec::new();
        let out = Encode::<RawJson>::encode(&ValueFormat::new(Kind::Json), &raw, &mut scratch);
        assert_eq!(out.unwrap(), json);
    }
}
