//! A bag of Kafka-style `key = value` properties that each config consumes its keys from.
//!
//! Configs layer: the client config takes the keys it knows, a producer or consumer config
//! takes its own from the same bag, and whatever is left is reported as unknown by
//! [`Properties::finish`]. Every parse error names the offending key.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};

/// String properties keyed by their dotted Kafka name (`bootstrap.servers`, `linger.ms`, ...).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Properties {
    entries: BTreeMap<String, String>,
}

impl fmt::Debug for Properties {
    // Passwords and JAAS strings must never end up in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (key, value) in &self.entries {
            if is_secret(key) {
                map.entry(key, &"<redacted>");
            } else {
                map.entry(key, value);
            }
        }
        map.finish()
    }
}

fn is_secret(key: &str) -> bool {
    key.contains("password") || key.contains("jaas") || key.contains("secret")
}

impl Properties {
    /// An empty bag.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value`, replacing an earlier value (the last one wins, as in a
    /// Java `.properties` file). Keys and values are trimmed.
    pub fn set(&mut self, key: impl AsRef<str>, value: impl AsRef<str>) {
        self.entries.insert(
            key.as_ref().trim().to_owned(),
            value.as_ref().trim().to_owned(),
        );
    }

    /// Whether no property is left.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of properties left.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The value of `key`, without consuming it.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(String::as_str)
    }

    /// Removes and returns the raw value of `key`.
    pub fn take(&mut self, key: &str) -> Option<String> {
        self.entries.remove(key)
    }

    /// Removes `key` and parses it with [`FromStr`]; a bad value is an error naming the key.
    pub fn take_parsed<T>(&mut self, key: &str) -> Result<Option<T>>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self.take(key) {
            None => Ok(None),
            Some(raw) => raw
                .parse::<T>()
                .map(Some)
                .map_err(|e| config_error(key, format!("invalid value {raw:?}: {e}"))),
        }
    }

    /// Removes `key`, a non-negative number of milliseconds.
    pub fn take_millis(&mut self, key: &str) -> Result<Option<Duration>> {
        match self.take(key) {
            None => Ok(None),
            Some(raw) => raw
                .parse::<u64>()
                .map(|ms| Some(Duration::from_millis(ms)))
                .map_err(|_| {
                    config_error(
                        key,
                        format!("expected a non-negative number of milliseconds, got {raw:?}"),
                    )
                }),
        }
    }

    /// Removes `key`, a boolean (`true`/`false`, any case).
    pub fn take_bool(&mut self, key: &str) -> Result<Option<bool>> {
        match self.take(key) {
            None => Ok(None),
            Some(raw) => match raw.to_ascii_lowercase().as_str() {
                "true" => Ok(Some(true)),
                "false" => Ok(Some(false)),
                _ => Err(config_error(
                    key,
                    format!("expected true or false, got {raw:?}"),
                )),
            },
        }
    }

    /// Removes `key`, a comma-separated list; empty items are dropped.
    pub fn take_list(&mut self, key: &str) -> Option<Vec<String>> {
        self.take(key).map(|raw| {
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
    }

    /// Removes whichever of `keys` are present and returns the first one's value together
    /// with its name (for aliases such as librdkafka's `sasl.mechanisms` next to `sasl.mechanism`).
    pub fn take_any(&mut self, keys: &[&'static str]) -> Option<(&'static str, String)> {
        let mut found = None;
        for key in keys {
            if let Some(value) = self.take(key) {
                found.get_or_insert((*key, value));
            }
        }
        found
    }

    /// Succeeds only if every property was consumed; otherwise names the first unknown key.
    pub fn finish(self) -> Result<()> {
        match self.entries.into_keys().next() {
            None => Ok(()),
            Some(key) => Err(config_error(&key, "unknown property")),
        }
    }
}

/// The [`Error::Config`] for `key`.
pub(crate) fn config_error(key: &str, message: impl Into<String>) -> Error {
    Error::Config {
        key: key.to_owned(),
        message: message.into(),
    }
}

impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for Properties {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut props = Properties::new();
        for (key, value) in iter {
            props.set(key, value);
        }
        props
    }
}

impl<K: AsRef<str>, V: AsRef<str>> Extend<(K, V)> for Properties {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        for (key, value) in iter {
            self.set(key, value);
        }
    }
}

/// One value in a TOML or JSON config file.
#[derive(Deserialize)]
#[serde(untagged)]
enum FileValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    /// `bootstrap.servers = ["a:9092", "b:9092"]` becomes a comma-separated list.
    List(Vec<FileValue>),
    /// Unquoted dotted TOML keys (`bootstrap.servers = ".."`) arrive as nested tables.
    Table(BTreeMap<String, FileValue>),
}

impl FileValue {
    fn flatten_into(self, key: String, props: &mut Properties) -> Result<(), String> {
        match self {
            FileValue::Table(table) => {
                for (sub, value) in table {
                    value.flatten_into(format!("{key}.{sub}"), props)?;
                }
                Ok(())
            }
            other => {
                let text = other.into_text(&key)?;
                props.set(key, text);
                Ok(())
            }
        }
    }

    fn into_text(self, key: &str) -> Result<String, String> {
        Ok(match self {
            FileValue::Bool(b) => b.to_string(),
            FileValue::Int(i) => i.to_string(),
            FileValue::Float(f) => f.to_string(),
            FileValue::Text(s) => s,
            FileValue::List(items) => {
                let mut parts = Vec::with_capacity(items.len());
                for item in items {
                    if matches!(item, FileValue::List(_) | FileValue::Table(_)) {
                        return Err(format!("property {key}: nested lists are not allowed"));
                    }
                    parts.push(item.into_text(key)?);
                }
                parts.join(",")
            }
            FileValue::Table(_) => return Err(format!("property {key}: unexpected table")),
        })
    }
}

impl<'de> Deserialize<'de> for Properties {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let table = BTreeMap::<String, FileValue>::deserialize(deserializer)?;
        let mut props = Properties::new();
        for (key, value) in table {
            value
                .flatten_into(key, &mut props)
                .map_err(serde::de::Error::custom)?;
        }
        Ok(props)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(err: Error) -> String {
        match err {
            Error::Config { key, .. } => key,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn last_value_wins_and_whitespace_is_trimmed() {
        let mut p: Properties = [("a", "1"), (" a ", " 2 ")].into_iter().collect();
        assert_eq!(p.len(), 1);
        assert_eq!(p.take("a").as_deref(), Some("2"));
        assert!(p.is_empty());
    }

    #[test]
    fn leftover_key_is_reported_as_unknown() {
        let mut p: Properties = [("known", "1"), ("bogus.key", "x")].into_iter().collect();
        p.take("known");
        assert_eq!(key_of(p.finish().unwrap_err()), "bogus.key");
    }

    #[test]
    fn malformed_millis_names_the_key() {
        let mut p: Properties = [("x.ms", "soon")].into_iter().collect();
        assert_eq!(key_of(p.take_millis("x.ms").unwrap_err()), "x.ms");
        let mut p: Properties = [("x.ms", "-1")].into_iter().collect();
        assert_eq!(key_of(p.take_millis("x.ms").unwrap_err()), "x.ms");
        let mut p: Properties = [("x.ms", "250")].into_iter().collect();
        assert_eq!(
            p.take_millis("x.ms").unwrap(),
            Some(Duration::from_millis(250))
        );
    }

    #[test]
    fn bools_parse_in_any_case_and_reject_others() {
        let mut p: Properties = [("a", "TRUE"), ("b", "false"), ("c", "yes")]
            .into_iter()
            .collect();
        assert_eq!(p.take_bool("a").unwrap(), Some(true));
        assert_eq!(p.take_bool("b").unwrap(), Some(false));
        assert_eq!(key_of(p.take_bool("c").unwrap_err()), "c");
    }

    #[test]
    fn parsed_value_error_names_key() {
        let mut p: Properties = [("n", "12x")].into_iter().collect();
        assert_eq!(key_of(p.take_parsed::<u32>("n").unwrap_err()), "n");
    }

    #[test]
    fn lists_split_on_commas_and_drop_empties() {
        let mut p: Properties = [("l", "a:1, b:2,,")].into_iter().collect();
        assert_eq!(p.take_list("l").unwrap(), vec!["a:1", "b:2"]);
    }

    #[test]
    fn alias_takes_both_spellings() {
        let mut p: Properties = [("sasl.mechanisms", "PLAIN")].into_iter().collect();
        assert_eq!(
            p.take_any(&["sasl.mechanism", "sasl.mechanisms"]),
            Some(("sasl.mechanisms", "PLAIN".to_owned()))
        );
        assert!(p.is_empty());
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let p: Properties = [("sasl.password", "hunter2"), ("client.id", "me")]
            .into_iter()
            .collect();
        let shown = format!("{p:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("me"));
    }

    #[test]
    fn json_numbers_bools_and_lists_become_strings() {
        let p: Properties = serde_json::from_str(
            r#"{"request.timeout.ms": 5000, "x.flag": true, "bootstrap.servers": ["a:1", "b:2"], "f": 1.5}"#,
        )
        .unwrap();
        assert_eq!(p.get("request.timeout.ms"), Some("5000"));
        assert_eq!(p.get("x.flag"), Some("true"));
        assert_eq!(p.get("bootstrap.servers"), Some("a:1,b:2"));
        assert_eq!(p.get("f"), Some("1.5"));
    }

    #[test]
    fn nested_json_objects_flatten_to_dotted_keys() {
        let p: Properties =
            serde_json::from_str(r#"{"bootstrap": {"servers": "h:1"}, "sasl": {"username": "u"}}"#)
                .unwrap();
        assert_eq!(p.get("bootstrap.servers"), Some("h:1"));
        assert_eq!(p.get("sasl.username"), Some("u"));
    }

    #[test]
    fn nested_lists_are_rejected() {
        let err = serde_json::from_str::<Properties>(r#"{"a": [[1]]}"#).unwrap_err();
        assert!(err.to_string().contains("nested"), "{err}");
    }
}
