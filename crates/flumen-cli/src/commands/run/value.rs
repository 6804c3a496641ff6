//! JSON values as a pipeline file sees them: paths, comparisons, the value format of sources
//! and sinks, and the stateless steps (filter, map, split, also_to) run on them.

use std::sync::Arc;

use flumen_runtime::format::{Decode, Encode, FormatError, Owned};
use regex::Regex;
use serde_json::{Map, Value};

use super::expr::Expr;

/// A dotted path into a JSON value (`user.country`); empty for the value itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Path(pub Vec<String>);

impl Path {
    /// Parses `a.b.c`; `""` and `"$"` are the whole value.
    pub fn parse(s: &str) -> Path {
        let s = s.strip_prefix("$.").unwrap_or(s);
        if s.is_empty() || s == "$" {
            return Path(Vec::new());
        }
        Path(s.split('.').map(str::to_owned).collect())
    }

    /// The value at this path, if any (array elements by index).
    pub fn get<'v>(&self, v: &'v Value) -> Option<&'v Value> {
        let mut cur = v;
        for seg in &self.0 {
            cur = match cur {
                Value::Object(m) => field(m, seg)?,
                Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(cur)
    }

    /// The value at this path, mutably.
    pub fn get_mut<'v>(&self, v: &'v mut Value) -> Option<&'v mut Value> {
        let mut cur = v;
        for seg in &self.0 {
            cur = match cur {
                Value::Object(m) => field_mut(m, seg)?,
                Value::Array(a) => a.get_mut(seg.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(cur)
    }
}

/// Objects of at most this many fields are searched by comparing names, which costs less
/// than hashing the name (records of a few fields are the common case).
const SCAN: usize = 8;

/// The field `name` of `m`.
fn field<'v>(m: &'v Map<String, Value>, name: &str) -> Option<&'v Value> {
    if m.len() <= SCAN {
        m.iter().find(|(k, _)| *k == name).map(|(_, x)| x)
    } else {
        m.get(name)
    }
}

/// The field `name` of `m`, mutably.
fn field_mut<'v>(m: &'v mut Map<String, Value>, name: &str) -> Option<&'v mut Value> {
    if m.len() <= SCAN {
        m.iter_mut().find(|(k, _)| *k == name).map(|(_, x)| x)
    } else {
        m.get_mut(name)
    }
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            f.write_str("$")
        } else {
            f.write_str(&self.0.join("."))
        }
    }
}

/// A value as text: a string's contents, anything else as JSON.
pub fn text(v: &Value) -> std::borrow::Cow<'_, str> {
    match v {
        Value::String(s) => std::borrow::Cow::Borrowed(s),
        other => std::borrow::Cow::Owned(other.to_string()),
    }
}

/// A comparison operator of a filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Op {
    /// `==`, `!=`, `<`, `<=`, `>`, `>=`.
    pub fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "==" => Op::Eq,
            "!=" => Op::Ne,
            "<" => Op::Lt,
            "<=" => Op::Le,
            ">" => Op::Gt,
            ">=" => Op::Ge,
            _ => return None,
        })
    }

    /// Whether `left op right` holds: numbers compare as numbers, strings as strings, other
    /// values only for (in)equality. A missing left side satisfies only `!=`.
    pub fn holds(self, left: Option<&Value>, right: &Value) -> bool {
        let Some(left) = left else {
            return self == Op::Ne;
        };
        let order = match (left, right) {
            (Value::Number(a), Value::Number(b)) => a
                .as_f64()
                .zip(b.as_f64())
                .and_then(|(a, b)| a.partial_cmp(&b)),
            (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
            (a, b) => (a == b).then_some(std::cmp::Ordering::Equal),
        };
        match self {
            Op::Eq => order.is_some_and(|o| o.is_eq()),
            Op::Ne => !order.is_some_and(|o| o.is_eq()),
            Op::Lt => order.is_some_and(|o| o.is_lt()),
            Op::Le => order.is_some_and(|o| o.is_le()),
            Op::Gt => order.is_some_and(|o| o.is_gt()),
            Op::Ge => order.is_some_and(|o| o.is_ge()),
        }
    }
}

/// A condition on a value: a comparison or a regular expression.
#[derive(Clone, Debug)]
pub enum Condition {
    Compare { path: Path, op: Op, value: Value },
    Regex { path: Path, regex: Regex },
}

impl Condition {
    /// Whether `v` satisfies it.
    pub fn holds(&self, v: &Value) -> bool {
        match self {
            Condition::Compare { path, op, value } => op.holds(path.get(v), value),
            Condition::Regex { path, regex } => {
                path.get(v).is_some_and(|x| regex.is_match(&text(x)))
            }
        }
    }
}

/// Upper or lower case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Case {
    Upper,
    Lower,
}

/// One stateless step.
#[derive(Clone, Debug)]
pub enum Step {
    Filter(Condition),
    /// Keeps only these top-level fields.
    Project(Vec<String>),
    /// Renames top-level fields, `(from, to)`.
    Rename(Vec<(String, String)>),
    /// Sets top-level fields to constants.
    Set(Vec<(String, Value)>),
    /// Changes the case of the string at a path (the whole value for `$`).
    Case(Path, Case),
    /// Splits the string at a path on whitespace: one item per word.
    Split(Path),
    /// Sets top-level fields to the value of an expression.
    Compute(Vec<(String, Expr)>),
    /// Replaces the item by the value at a path (items without it are dropped).
    Extract(Path),
    /// Copies the item to a side topic (`also_to`), and passes it on.
    Tap(Arc<Tap>),
}

/// An `also_to` step: what it writes for an item, if anything, and where.
#[derive(Clone, Debug)]
pub struct Tap {
    /// Its place among the taps of its run of stateless steps (the `divert` topic number).
    pub slot: usize,
    pub topic: String,
    pub kind: Kind,
    /// Fields computed first,
    pub compute: Vec<(String, Expr)>,
    /// then conditions that must all hold,
    pub when: Vec<Condition>,
    /// then the fields kept (all when `None`).
    pub fields: Option<Vec<String>>,
}

impl Tap {
    /// The copy of `v` this tap writes, if any.
    pub fn copy(&self, v: &Value) -> Option<Value> {
        let holds = |v: &Value| self.when.iter().all(|c| c.holds(v));
        // Without computed fields the conditions see the item itself: no copy when they fail.
        if self.compute.is_empty() && !holds(v) {
            return None;
        }
        if let (true, Some(fields), Value::Object(m)) = (self.compute.is_empty(), &self.fields, v) {
            // Only the kept fields are copied.
            let kept = fields
                .iter()
                .filter_map(|f| m.get(f).map(|x| (f.clone(), x.clone())))
                .collect();
            return Some(Value::Object(kept));
        }
        let mut v = v.clone();
        if !self.compute.is_empty() {
            v = compute(v, &self.compute);
            if !holds(&v) {
                return None;
            }
        }
        if let Some(fields) = &self.fields {
            project(&mut v, fields);
        }
        Some(v)
    }
}

/// `v` (an object; any other value becomes `{"value": v}`) with `fields` set to their
/// expressions' values.
fn compute(v: Value, fields: &[(String, Expr)]) -> Value {
    let mut v = match v {
        Value::Object(_) => v,
        other => serde_json::json!({ "value": other }),
    };
    let computed: Vec<Value> = fields.iter().map(|(_, e)| e.eval(&v)).collect();
    if let Value::Object(m) = &mut v {
        for ((k, _), x) in fields.iter().zip(computed) {
            m.insert(k.clone(), x);
        }
    }
    v
}

/// Keeps only `fields` of an object, in that order.
fn project(v: &mut Value, fields: &[String]) {
    if let Value::Object(m) = v {
        let mut kept = Map::new();
        for f in fields {
            if let Some(x) = m.remove(f) {
                kept.insert(f.clone(), x);
            }
        }
        *m = kept;
    }
}

/// A copy for a side topic: the `divert` topic number, and the value with its format.
pub type Side = (usize, (Kind, Value));

/// Runs `steps` on one item: zero, one or more items out, and the copies its `also_to`
/// steps make. Steps change the item in place; only `split` makes new items, each of which
/// goes through the remaining steps before the next (no buffer per step).
pub fn run_steps(steps: &[Step], mut v: Value, out: &mut Vec<Value>, side: &mut Vec<Side>) {
    for (i, step) in steps.iter().enumerate() {
        match step {
            Step::Filter(c) => {
                if !c.holds(&v) {
                    return;
                }
            }
            Step::Project(fields) => project(&mut v, fields),
            Step::Rename(pairs) => {
                if let Value::Object(m) = &mut v {
                    // Rebuilt, so that a renamed field keeps its place.
                    *m = std::mem::take(m)
                        .into_iter()
                        .map(|(k, x)| match pairs.iter().find(|(from, _)| *from == k) {
                            Some((_, to)) => (to.clone(), x),
                            None => (k, x),
                        })
                        .collect();
                }
            }
            Step::Set(pairs) => {
                if !v.is_object() {
                    v = serde_json::json!({ "value": v });
                }
                if let Value::Object(m) = &mut v {
                    for (k, x) in pairs {
                        m.insert(k.clone(), x.clone());
                    }
                }
            }
            Step::Case(path, case) => {
                if let Some(Value::String(s)) = path.get_mut(&mut v) {
                    match (case, s.is_ascii()) {
                        (Case::Upper, true) => s.make_ascii_uppercase(),
                        (Case::Lower, true) => s.make_ascii_lowercase(),
                        (Case::Upper, false) => *s = s.to_uppercase(),
                        (Case::Lower, false) => *s = s.to_lowercase(),
                    }
                }
            }
            Step::Split(path) => {
                if let Some(Value::String(s)) = path.get(&v) {
                    for word in s.split_whitespace() {
                        run_steps(&steps[i + 1..], Value::String(word.to_owned()), out, side);
                    }
                }
                return;
            }
            Step::Compute(fields) => v = compute(v, fields),
            Step::Extract(path) => match path.get_mut(&mut v) {
                Some(x) => v = x.take(),
                None => return,
            },
            Step::Tap(tap) => {
                if let Some(copy) = tap.copy(&v) {
                    side.push((tap.slot, (tap.kind, copy)));
                }
            }
        }
    }
    out.push(v);
}

/// How values are read and written: JSON, or text (a JSON string) for `string` and `bytes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Json,
    String,
    Bytes,
}

impl Kind {
    /// `json`, `string`, `bytes`.
    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "json" => Kind::Json,
            "string" => Kind::String,
            "bytes" => Kind::Bytes,
            _ => return None,
        })
    }
}

/// The format of every source, table, repartition and sink of a pipeline file: items are
/// `serde_json::Value`s; event time optionally read from a field.
#[derive(Clone, Debug)]
pub struct ValueFormat {
    pub kind: Kind,
    pub timestamp: Option<Arc<Path>>,
    /// Decoding does not read the value: each item is `true`, or `null` for a JSON `null`
    /// (in `Kind::Json`; text is never `null`).
    /// For the repartition into a stage whose steps look at nothing of their items but
    /// whether they are `null` (a window counting them), so that it parses nothing.
    pub unread: bool,
}

impl ValueFormat {
    /// A format of `kind` with record time.
    pub fn new(kind: Kind) -> Self {
        ValueFormat {
            kind,
            timestamp: None,
            unread: false,
        }
    }
}

impl Decode for ValueFormat {
    type Family = Owned<Value>;

    fn decode(&self, value: Option<&[u8]>) -> Result<Value, FormatError> {
        if self.unread {
            return Ok(match (self.kind, value) {
                (Kind::Json, Some(b"null")) => Value::Null,
                _ => Value::Bool(true),
            });
        }
        match self.kind {
            Kind::Json => {
                let bytes = value.ok_or_else(|| FormatError::new("null value, expected JSON"))?;
                if let Some(s) = plain_string(bytes) {
                    return Ok(Value::String(s.to_owned()));
                }
                read_json(bytes).map_err(|e| FormatError(format!("invalid JSON: {e}")))
            }
            Kind::String => {
                let bytes = value.unwrap_or_default();
                std::str::from_utf8(bytes)
                    .map(|s| Value::String(s.to_owned()))
                    .map_err(|e| FormatError(format!("not UTF-8: {e}")))
            }
            Kind::Bytes => Ok(Value::String(
                String::from_utf8_lossy(value.unwrap_or_default()).into_owned(),
            )),
        }
    }

    fn timestamp(&self, item: &Value, record_time: i64) -> i64 {
        match &self.timestamp {
            Some(path) => path
                .get(item)
                .and_then(Value::as_i64)
                .unwrap_or(record_time),
            None => record_time,
        }
    }
}

impl Encode<Owned<Value>> for ValueFormat {
    fn encode<'b>(
        &self,
        item: &'b Value,
        scratch: &'b mut Vec<u8>,
    ) -> Result<&'b [u8], FormatError> {
        match (self.kind, item) {
            (Kind::String | Kind::Bytes, Value::String(s)) => Ok(s.as_bytes()),
            (Kind::Json, Value::String(s)) if !s.bytes().any(escaped) => {
                scratch.reserve(s.len() + 2);
                scratch.push(b'"');
                scratch.extend_from_slice(s.as_bytes());
                scratch.push(b'"');
                Ok(scratch)
            }
            _ => {
                serde_json::to_writer(&mut *scratch, item)
                    .map_err(|e| FormatError(format!("cannot write JSON: {e}")))?;
                Ok(scratch)
            }
        }
    }
}

/// Whether JSON writes byte `b` of a string escaped (serde_json escapes exactly these).
fn escaped(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// The contents of `bytes` when they are a JSON string with nothing escaped, as a repartition
/// of words or keys carries them: read without the JSON parser. Anything else is `None`.
fn plain_string(bytes: &[u8]) -> Option<&str> {
    let inner = bytes.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    if inner.iter().copied().any(escaped) {
        return None;
    }
    std::str::from_utf8(inner).ok()
}

/// Fields an object read from JSON has room for before it grows: a map grown from empty to
/// 4..7 fields ends at this capacity anyway, after allocating twice more.
const FIELDS: usize = 7;

/// `bytes` as a JSON value, as `serde_json::from_slice` reads it, but with each object made
/// with room for [`FIELDS`] fields.
fn read_json(bytes: &[u8]) -> serde_json::Result<Value> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let v = serde::de::DeserializeSeed::deserialize(ValueSeed, &mut de)?;
    de.end()?;
    Ok(v)
}

/// Reads one JSON value (see [`read_json`]).
#[derive(Clone, Copy)]
pub(super) struct ValueSeed;

impl<'de> serde::de::DeserializeSeed<'de> for ValueSeed {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueSeed)
    }
}

impl<'de> serde::de::Visitor<'de> for ValueSeed {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::from(n))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(Value::from(n))
    }

    fn visit_f64<E>(self, x: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(x) = seq.next_element_seed(ValueSeed)? {
            items.push(x);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut m = Map::with_capacity(FIELDS);
        while let Some(k) = map.next_key::<String>()? {
            let x = map.next_value_seed(ValueSeed)?;
            m.insert(k, x);
        }
        Ok(Value::Object(m))
    }
}

/// The format of `also_to` copies: each carries its own kind.
#[derive(Clone, Copy, Debug)]
pub struct SideFormat;

impl Encode<Owned<(Kind, Value)>> for SideFormat {
    fn encode<'b>(
        &self,
        (kind, item): &'b (Kind, Value),
        scratch: &'b mut Vec<u8>,
    ) -> Result<&'b [u8], FormatError> {
        Encode::<Owned<Value>>::encode(&ValueFormat::new(*kind), item, scratch)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn paths_comparisons_and_steps() {
        let v = json!({"a": {"b": 3}, "s": "Hello world", "n": 2.5});
        assert_eq!(Path::parse("a.b").get(&v), Some(&json!(3)));
        assert_eq!(Path::parse("$").get(&v), Some(&v));
        assert!(Op::Ge.holds(Path::parse("a.b").get(&v), &json!(3.0)));
        assert!(!Op::Lt.holds(Path::parse("missing").get(&v), &json!(1)));
        assert!(Op::Ne.holds(None, &json!(1)));
        let steps = [
            Step::Case(Path::parse("s"), Case::Lower),
            Step::Split(Path::parse("s")),
        ];
        let mut out = Vec::new();
        run_steps(&steps, v, &mut out, &mut Vec::new());
        assert_eq!(out, vec![json!("hello"), json!("world")]);
    }

    #[test]
    fn json_strings_read_and_written_without_the_parser_as_serde_json_would() {
        let format = ValueFormat::new(Kind::Json);
        for s in [
            "",
            "word",
            "é ü",
            "tab\there",
            "quote\"",
            "back\\slash",
            "\u{7f}/",
        ] {
            let v = json!(s);
            let mut scratch = Vec::new();
            let written = Encode::<Owned<Value>>::encode(&format, &v, &mut scratch)
                .expect("encodes")
                .to_vec();
            assert_eq!(
                written,
                serde_json::to_vec(&v).expect("serde_json"),
                "{s:?}"
            );
            assert_eq!(format.decode(Some(&written)).expect("decodes"), v, "{s:?}");
        }
        assert!(format.decode(Some(b"\"\xff\"")).is_err());
        let text = r#"{"a": [1, -2, 2.5, 1e300, null, true], "b": {"c": "d\u00e9"}, "a": 3}"#;
        assert_eq!(
            format.decode(Some(text.as_bytes())).ok(),
            serde_json::from_str::<Value>(text).ok()
        );
        assert!(format.decode(Some(b"{\"a\": 1} x")).is_err());
        assert_eq!(format.decode(Some(b" \"a\" ")).ok(), Some(json!("a")));
    }
}
