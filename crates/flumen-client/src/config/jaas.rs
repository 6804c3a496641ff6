//! Parser for the Java client's `sasl.jaas.config` value (PLAIN and SCRAM login modules).
//!
//! The grammar is JAAS's: `<LoginModuleClass> <flag> key=value ... ;` where values may be
//! double-quoted with `\` escapes. Only the two login modules whose credentials we can use
//! are accepted; Kerberos and OAuth modules are refused with a message saying so.

/// Which login module a JAAS entry names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum JaasModule {
    /// `org.apache.kafka.common.security.plain.PlainLoginModule`.
    Plain,
    /// `org.apache.kafka.common.security.scram.ScramLoginModule`.
    Scram,
}

/// The credentials carried by a JAAS entry.
/// `Debug` leaves the password out.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct JaasLogin {
    pub module: JaasModule,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for JaasLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JaasLogin")
            .field("module", &self.module)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

const PLAIN_MODULE: &str = "org.apache.kafka.common.security.plain.PlainLoginModule";
const SCRAM_MODULE: &str = "org.apache.kafka.common.security.scram.ScramLoginModule";

/// Parses one JAAS login entry. The error message never includes the password.
pub(crate) fn parse(text: &str) -> Result<JaasLogin, String> {
    let mut tokens = Tokenizer { rest: text.trim() };
    let module = match tokens.word()? {
        Some(m) if m == PLAIN_MODULE => JaasModule::Plain,
        Some(m) if m == SCRAM_MODULE => JaasModule::Scram,
        Some(m) => {
            return Err(format!(
                "login module {m} is not supported (use {PLAIN_MODULE} or {SCRAM_MODULE})"
            ));
        }
        None => return Err("empty JAAS configuration".to_owned()),
    };
    match tokens.word()? {
        Some(flag)
            if ["required", "requisite", "sufficient", "optional"].contains(&flag.as_str()) => {}
        _ => return Err("expected a control flag (required) after the login module".to_owned()),
    }
    let mut username = None;
    let mut password = None;
    loop {
        tokens.skip_space();
        if tokens.eat(';') {
            break;
        }
        let key = tokens
            .word()?
            .ok_or("missing ';' at the end of the JAAS entry")?;
        if !tokens.eat('=') {
            return Err(format!("expected '=' after option {key}"));
        }
        let value = tokens.value()?;
        match key.as_str() {
            "username" => username = Some(value),
            "password" => password = Some(value),
            // Other options (e.g. tokenauth) do not change what we send.
            _ => {}
        }
    }
    tokens.skip_space();
    if !tokens.rest.is_empty() {
        return Err("only one JAAS login entry is supported".to_owned());
    }
    Ok(JaasLogin {
        module,
        username: username.ok_or("the JAAS entry has no username option")?,
        password: password.ok_or("the JAAS entry has no password option")?,
    })
}

struct Tokenizer<'a> {
    rest: &'a str,
}

impl Tokenizer<'_> {
    fn skip_space(&mut self) {
        self.rest = self.rest.trim_start();
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_space();
        match self.rest.strip_prefix(c) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    /// An unquoted word: anything up to whitespace, `=` or `;`.
    fn word(&mut self) -> Result<Option<String>, String> {
        self.skip_space();
        let end = self
            .rest
            .find(|c: char| c.is_whitespace() || c == '=' || c == ';')
            .unwrap_or(self.rest.len());
        if end == 0 {
            return Ok(None);
        }
        let (word, rest) = self.rest.split_at(end);
        if word.starts_with('"') {
            return Err("unexpected quote".to_owned());
        }
        self.rest = rest;
        Ok(Some(word.to_owned()))
    }

    /// A quoted or unquoted option value.
    fn value(&mut self) -> Result<String, String> {
        self.skip_space();
        let Some(quoted) = self.rest.strip_prefix('"') else {
            return self
                .word()?
                .ok_or_else(|| "missing option value".to_owned());
        };
        let mut out = String::new();
        let mut chars = quoted.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.rest = &quoted[i + 1..];
                    return Ok(out);
                }
                '\\' => match chars.next() {
                    Some((_, escaped)) => out.push(escaped),
                    None => break,
                },
                other => out.push(other),
            }
        }
        Err("unterminated quoted value".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_login_module_yields_credentials() {
        let login = parse(
            r#"org.apache.kafka.common.security.plain.PlainLoginModule required username="alice" password="alice-secret";"#,
        )
        .unwrap();
        assert_eq!(login.module, JaasModule::Plain);
        assert_eq!(login.username, "alice");
        assert_eq!(login.password, "alice-secret");
    }

    #[test]
    fn scram_login_module_with_escapes_and_extra_options() {
        let login = parse(
            "org.apache.kafka.common.security.scram.ScramLoginModule required\n  username=bob\n  password=\"p\\\"w;d\" tokenauth=false ;",
        )
        .unwrap();
        assert_eq!(login.module, JaasModule::Scram);
        assert_eq!(login.username, "bob");
        assert_eq!(login.password, "p\"w;d");
    }

    #[test]
    fn kerberos_module_is_refused_by_name() {
        let err = parse("com.sun.security.auth.module.Krb5LoginModule required useKeyTab=true;")
            .unwrap_err();
        assert!(err.contains("Krb5LoginModule"), "{err}");
    }

    #[test]
    fn malformed_entries_are_errors() {
        for bad in [
            "",
            "org.apache.kafka.common.security.plain.PlainLoginModule",
            "org.apache.kafka.common.security.plain.PlainLoginModule required username=\"a\" password=\"b\"",
            "org.apache.kafka.common.security.plain.PlainLoginModule required username=\"a\" password=\"b",
            "org.apache.kafka.common.security.plain.PlainLoginModule required username=\"a\";",
            "org.apache.kafka.common.security.plain.PlainLoginModule required password=\"b\";",
            "org.apache.kafka.common.security.plain.PlainLoginModule required username \"a\";",
            "org.apache.kafka.common.security.plain.PlainLoginModule maybe username=\"a\" password=\"b\";",
        ] {
            assert!(parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn error_messages_never_contain_the_password() {
        let err = parse(
            "org.apache.kafka.common.security.plain.PlainLoginModule required password=\"topsecret\" ;trailing",
        )
        .unwrap_err();
        assert!(!err.contains("topsecret"), "{err}");
    }
}
