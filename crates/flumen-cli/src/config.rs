//! Client properties from `--config FILE`, `-X key=value` and `-b`, in that order of priority
//! (later wins), remembering where each key came from so that errors can say so.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use flumen_client::ClientConfig;
use flumen_client::config::Properties;

use crate::cli::GlobalArgs;
use crate::error::{CliError, Result};

/// `batch.size` of the producer commands unless set: librdkafka's default.
pub const CLI_BATCH_SIZE: &str = "1000000";
/// `linger.ms` of the producer commands unless set: librdkafka's default.
pub const CLI_LINGER_MS: &str = "5";

/// Where a property was given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// `-X key=value`.
    Flag,
    /// `-b/--bootstrap` or `FLUMEN_BOOTSTRAP`.
    Bootstrap,
    /// A `--config` file.
    File(PathBuf),
    /// Set by the command itself (e.g. `--acks`).
    Command,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag => f.write_str("given with -X"),
            Origin::Bootstrap => f.write_str("from -b/--bootstrap"),
            Origin::File(path) => write!(f, "in {}", path.display()),
            Origin::Command => f.write_str("set by the command's options"),
        }
    }
}

/// The merged client properties and the origin of each key.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    props: Properties,
    origins: BTreeMap<String, Origin>,
}

impl Settings {
    /// Reads `--config`, then applies `-X` and `-b`.
    pub fn load(global: &GlobalArgs) -> Result<Settings> {
        let mut settings = Settings::default();
        if let Some(path) = &global.config {
            for (key, value) in read_file(path)? {
                settings.set(key, value, Origin::File(path.clone()));
            }
        }
        for raw in &global.properties {
            let (key, value) = raw
                .split_once('=')
                .filter(|(k, _)| !k.trim().is_empty())
                .ok_or_else(|| CliError::BadProperty(raw.clone()))?;
            settings.set(key, value, Origin::Flag);
        }
        if let Some(servers) = &global.bootstrap {
            settings.set("bootstrap.servers", servers, Origin::Bootstrap);
        }
        Ok(settings)
    }

    /// Sets `key` (overriding an earlier value) and records its origin.
    pub fn set(&mut self, key: impl AsRef<str>, value: impl AsRef<str>, origin: Origin) {
        let key = key.as_ref().trim();
        self.origins.insert(key.to_owned(), origin);
        self.props.set(key, value);
    }

    /// Sets `key` only if the user did not.
    pub fn set_default(&mut self, key: &str, value: impl AsRef<str>) {
        if self.props.get(key).is_none() {
            self.set(key, value, Origin::Command);
        }
    }

    /// The producer commands' defaults: librdkafka's throughput settings (`batch.size`
    /// 1000000, `linger.ms` 5) rather than the library's Java ones (16384, 5), unless `-X` or
    /// `--config` set them. A command-line tool mostly moves many records at once.
    pub fn producer_throughput_defaults(&mut self) {
        self.set_default("batch.size", CLI_BATCH_SIZE);
        self.set_default("linger.ms", CLI_LINGER_MS);
    }

    /// Whether `bootstrap.servers` was given in any way.
    pub fn has_bootstrap(&self) -> bool {
        self.props
            .get("bootstrap.servers")
            .is_some_and(|s| !s.trim().is_empty())
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.props.get(key)
    }

    /// Takes the client's keys; the rest stays for the producer or consumer config.
    pub fn take_client(&mut self) -> Result<ClientConfig> {
        if !self.has_bootstrap() {
            return Err(CliError::NoBootstrap);
        }
        ClientConfig::take_from(&mut self.props).map_err(|e| self.config_error(e))
    }

    /// The client config alone: every other key is reported as unknown.
    pub fn client_only(mut self) -> Result<ClientConfig> {
        let config = self.take_client()?;
        self.finish()?;
        Ok(config)
    }

    /// Fails naming the first key nobody took.
    pub fn finish(self) -> Result<()> {
        let origins = &self.origins;
        self.props.finish().map_err(|e| match e {
            flumen_client::Error::Config { key, .. } => CliError::UnknownProperty {
                origin: origins.get(&key).cloned().unwrap_or(Origin::Flag),
                key,
            },
            other => CliError::client(other),
        })
    }

    /// Every property left, for a builder that takes them as strings (the runtime's config).
    pub fn drain(&mut self) -> Vec<(String, String)> {
        let mut all = Vec::new();
        let keys: Vec<String> = self.origins.keys().cloned().collect();
        for key in keys {
            if let Some(value) = self.props.take(&key) {
                all.push((key, value));
            }
        }
        all
    }

    /// Gives a producer or consumer config builder the property bag.
    pub fn props_mut(&mut self) -> &mut Properties {
        &mut self.props
    }

    /// A client config error, with the origin of the key it names.
    pub fn config_error(&self, e: flumen_client::Error) -> CliError {
        match e {
            flumen_client::Error::Config { key, message } => CliError::InvalidProperty {
                origin: self.origins.get(&key).cloned().unwrap_or(Origin::Command),
                key,
                message,
            },
            other => CliError::client(other),
        }
    }
}

/// The `key = value` pairs of a TOML or Java .properties file.
fn read_file(path: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).map_err(|source| CliError::ConfigFile {
        path: path.to_owned(),
        message: source.to_string(),
    })?;
    let syntax = |message: String| CliError::ConfigFile {
        path: path.to_owned(),
        message,
    };
    let is_toml = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"));
    if is_toml {
        let table: toml::Table =
            toml::from_str(&text).map_err(|e| syntax(one_line(&e.to_string())))?;
        let mut out = Vec::new();
        flatten_toml(String::new(), toml::Value::Table(table), &mut out).map_err(syntax)?;
        return Ok(out);
    }
    parse_properties(&text).map_err(syntax)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Unquoted dotted TOML keys (`bootstrap.servers = ...`) arrive as nested tables: joined
/// back with dots. Lists become comma-separated values, as Kafka writes them.
fn flatten_toml(
    key: String,
    value: toml::Value,
    out: &mut Vec<(String, String)>,
) -> std::result::Result<(), String> {
    let scalar = |v: toml::Value| -> std::result::Result<String, String> {
        match v {
            toml::Value::String(s) => Ok(s),
            toml::Value::Integer(i) => Ok(i.to_string()),
            toml::Value::Float(f) => Ok(f.to_string()),
            toml::Value::Boolean(b) => Ok(b.to_string()),
            toml::Value::Datetime(d) => Ok(d.to_string()),
            toml::Value::Array(_) | toml::Value::Table(_) => Err(format!(
                "`{key}`: nested lists or tables are not client properties"
            )),
        }
    };
    match value {
        toml::Value::Table(table) => {
            for (sub, v) in table {
                let full = if key.is_empty() {
                    sub
                } else {
                    format!("{key}.{sub}")
                };
                flatten_toml(full, v, out)?;
            }
        }
        toml::Value::Array(items) => {
            let parts = items
                .into_iter()
                .map(scalar)
                .collect::<std::result::Result<Vec<_>, _>>()?;
            out.push((key, parts.join(",")));
        }
        other => {
            let text = scalar(other)?;
            out.push((key, text));
        }
    }
    Ok(())
}

/// Parses Java `.properties`: `key=value` or `key: value`, `#`/`!` comments, blank lines.
/// Line continuations and escapes, rare in client configs, are not supported.
pub fn parse_properties(text: &str) -> std::result::Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let split = line.find(['=', ':']);
        let Some(at) = split else {
            return Err(format!("line {}: expected key=value, got {line:?}", n + 1));
        };
        let (key, value) = (line[..at].trim(), line[at + 1..].trim());
        if key.is_empty() {
            return Err(format!("line {}: empty key", n + 1));
        }
        out.push((key.to_owned(), value.to_owned()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_files_take_equals_colons_and_comments() {
        let pairs = parse_properties(
            "# comment\n! other\n\nbootstrap.servers = a:1,b:2\nclient.id: me\nsasl.jaas.config=x y=z\n",
        )
        .expect("valid");
        assert_eq!(
            pairs,
            vec![
                ("bootstrap.servers".to_owned(), "a:1,b:2".to_owned()),
                ("client.id".to_owned(), "me".to_owned()),
                ("sasl.jaas.config".to_owned(), "x y=z".to_owned()),
            ]
        );
    }

    #[test]
    fn a_line_without_separator_is_an_error_with_its_number() {
        let err = parse_properties("a=1\nnonsense\n").unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
    }

    #[test]
    fn flags_override_the_file_and_bootstrap_overrides_flags() {
        let dir = std::env::temp_dir().join(format!("flumen-cli-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("client.toml");
        std::fs::write(
            &file,
            "bootstrap.servers = [\"f:1\"]\nclient.id = \"from-file\"\n",
        )
        .expect("write");
        let global = GlobalArgs {
            bootstrap: Some("b:1".into()),
            properties: vec!["client.id=from-flag".into()],
            config: Some(file),
            log: None,
        };
        let settings = Settings::load(&global).expect("loads");
        assert_eq!(settings.get("client.id"), Some("from-flag"));
        assert_eq!(settings.get("bootstrap.servers"), Some("b:1"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn unknown_flag_key_is_named_with_its_origin() {
        let global = GlobalArgs {
            bootstrap: Some("b:1".into()),
            properties: vec!["no.such.key=1".into()],
            config: None,
            log: None,
        };
        let err = Settings::load(&global)
            .expect("loads")
            .client_only()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown property `no.such.key` (given with -X)"
        );
    }

    #[test]
    fn producer_defaults_yield_to_flags() {
        let global = GlobalArgs {
            properties: vec!["linger.ms=50".into()],
            ..GlobalArgs::default()
        };
        let mut settings = Settings::load(&global).expect("loads");
        settings.producer_throughput_defaults();
        assert_eq!(settings.get("batch.size"), Some("1000000"));
        assert_eq!(settings.get("linger.ms"), Some("50"));
    }

    #[test]
    fn a_flag_without_equals_is_refused() {
        let global = GlobalArgs {
            properties: vec!["acks".into()],
            ..GlobalArgs::default()
        };
        assert!(matches!(
            Settings::load(&global),
            Err(CliError::BadProperty(_))
        ));
    }
}
