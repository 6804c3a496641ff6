//! Unit tests of [`ClientConfig`]: every property, the defaults, and the error paths.

use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::error::Error;

fn props(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut all = vec![("bootstrap.servers".to_owned(), "127.0.0.1:9092".to_owned())];
    all.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    all
}

fn parse(extra: &[(&str, &str)]) -> Result<ClientConfig> {
    ClientConfig::from_properties(props(extra))
}

/// The key named by a config error; fails the test on any other outcome.
fn failing_key(extra: &[(&str, &str)]) -> String {
    match parse(extra) {
        Err(Error::Config { key, .. }) => key,
        Err(other) => panic!("expected a config error, got {other:?}"),
        Ok(config) => panic!("expected a config error, got {config:?}"),
    }
}

#[test]
fn defaults_follow_the_java_client() {
    let c = parse(&[]).unwrap();
    assert_eq!(c.bootstrap_servers, vec!["127.0.0.1:9092"]);
    assert_eq!(c.client_id, "flumen");
    assert_eq!(c.client_rack, None);
    assert!(matches!(c.security, Security::Plaintext));
    assert_eq!(c.request_timeout, Duration::from_millis(30_000));
    assert_eq!(c.connect_timeout, Duration::from_millis(10_000));
    assert_eq!(c.metadata_max_age, Duration::from_millis(300_000));
    assert_eq!(c.retry_backoff, Duration::from_millis(100));
    assert_eq!(c.retry_backoff_max, Duration::from_millis(1_000));
    assert_eq!(c.reconnect_backoff, Duration::from_millis(50));
    assert_eq!(c.reconnect_backoff_max, Duration::from_millis(1_000));
    assert_eq!(c.connections_max_idle, Duration::from_millis(540_000));
    assert_eq!(c.default_api_timeout, Duration::from_millis(60_000));
    assert_eq!(c.max_frame_bytes, 100_000_000);
}

#[test]
fn every_timing_property_is_read() {
    let c = parse(&[
        ("request.timeout.ms", "1001"),
        ("socket.connection.setup.timeout.ms", "1002"),
        ("metadata.max.age.ms", "1003"),
        ("retry.backoff.ms", "1004"),
        ("retry.backoff.max.ms", "1005"),
        ("reconnect.backoff.ms", "1006"),
        ("reconnect.backoff.max.ms", "1007"),
        ("connections.max.idle.ms", "1008"),
        ("default.api.timeout.ms", "1009"),
        ("receive.message.max.bytes", "1010"),
        ("client.id", "app-7"),
        ("client.rack", "rack-b"),
    ])
    .unwrap();
    let ms = Duration::from_millis;
    assert_eq!(c.request_timeout, ms(1001));
    assert_eq!(c.connect_timeout, ms(1002));
    assert_eq!(c.metadata_max_age, ms(1003));
    assert_eq!(c.retry_backoff, ms(1004));
    assert_eq!(c.retry_backoff_max, ms(1005));
    assert_eq!(c.reconnect_backoff, ms(1006));
    assert_eq!(c.reconnect_backoff_max, ms(1007));
    assert_eq!(c.connections_max_idle, ms(1008));
    assert_eq!(c.default_api_timeout, ms(1009));
    assert_eq!(c.max_frame_bytes, 1010);
    assert_eq!(c.client_id, "app-7");
    assert_eq!(c.client_rack.as_deref(), Some("rack-b"));
    let conn = c.connection_config();
    assert_eq!(conn.client_id, "app-7");
    assert_eq!(conn.request_timeout, ms(1001));
    assert_eq!(conn.connect_timeout, ms(1002));
    assert_eq!(conn.max_frame_bytes, 1010);
    assert_eq!(c.retry_policy().base_backoff(0), ms(1004));
    assert_eq!(c.reconnect_policy().base_backoff(10), ms(1007));
}

#[test]
fn malformed_numbers_name_their_key() {
    for key in [
        "request.timeout.ms",
        "socket.connection.setup.timeout.ms",
        "metadata.max.age.ms",
        "retry.backoff.ms",
        "retry.backoff.max.ms",
        "reconnect.backoff.ms",
        "reconnect.backoff.max.ms",
        "connections.max.idle.ms",
        "default.api.timeout.ms",
        "receive.message.max.bytes",
    ] {
        assert_eq!(failing_key(&[(key, "ten")]), key);
        assert_eq!(failing_key(&[(key, "-5")]), key);
    }
}

#[test]
fn zero_timeouts_and_tiny_frames_are_refused() {
    assert_eq!(
        failing_key(&[("request.timeout.ms", "0")]),
        "request.timeout.ms"
    );
    assert_eq!(
        failing_key(&[("socket.connection.setup.timeout.ms", "0")]),
        "socket.connection.setup.timeout.ms"
    );
    assert_eq!(
        failing_key(&[("receive.message.max.bytes", "10")]),
        "receive.message.max.bytes"
    );
}

#[test]
fn unknown_property_is_named() {
    assert_eq!(failing_key(&[("linger.msx", "5")]), "linger.msx");
}

#[test]
fn bootstrap_servers_are_split_and_validated() {
    let c = ClientConfig::from_properties([("bootstrap.servers", "a:1, b:2 ,[::1]:3")]).unwrap();
    assert_eq!(c.bootstrap_servers, vec!["a:1", "b:2", "[::1]:3"]);
    for bad in [
        "",
        "hostonly",
        "h:0",
        "h:99999",
        ":9092",
        "PLAINTEXT://h:9092",
        "h:port",
    ] {
        match ClientConfig::from_properties([("bootstrap.servers", bad)]) {
            Err(Error::Config { key, .. }) => assert_eq!(key, "bootstrap.servers", "for {bad:?}"),
            other => panic!("{bad:?} accepted: {other:?}"),
        }
    }
    match ClientConfig::from_properties([("client.id", "x")]) {
        Err(Error::Config { key, .. }) => assert_eq!(key, "bootstrap.servers"),
        other => panic!("missing bootstrap accepted: {other:?}"),
    }
}

#[test]
fn security_protocol_names_parse_in_any_case() {
    assert!(matches!(
        parse(&[("security.protocol", "plaintext")])
            .unwrap()
            .security,
        Security::Plaintext
    ));
    let ssl = parse(&[("security.protocol", "SSL"), ("ssl.ca.location", "/ca.pem")]).unwrap();
    assert_eq!(ssl.security_protocol(), SecurityProtocol::Ssl);
    match ssl.security {
        Security::Ssl(tls) => {
            assert!(
                tls.verify_hostname,
                "hostname verification is on by default"
            );
            assert!(
                tls.verify_certificate,
                "certificate verification is on by default"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        failing_key(&[("security.protocol", "TLS")]),
        "security.protocol"
    );
}

#[test]
fn sasl_from_librdkafka_names() {
    for (name, mechanism) in [
        ("PLAIN", SaslMechanism::Plain),
        ("SCRAM-SHA-256", SaslMechanism::ScramSha256),
        ("scram-sha-512", SaslMechanism::ScramSha512),
    ] {
        for key in ["sasl.mechanism", "sasl.mechanisms"] {
            let c = parse(&[
                ("security.protocol", "SASL_PLAINTEXT"),
                (key, name),
                ("sasl.username", "alice"),
                ("sasl.password", "pw"),
            ])
            .unwrap();
            match c.security {
                Security::SaslPlaintext(sasl) => {
                    assert_eq!(sasl.mechanism, mechanism);
                    assert_eq!(
                        (sasl.username.as_str(), sasl.password.as_str()),
                        ("alice", "pw")
                    );
                }
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!(
        failing_key(&[
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanism", "GSSAPI")
        ]),
        "sasl.mechanism"
    );
    assert_eq!(
        failing_key(&[
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanisms", "OAUTHBEARER")
        ]),
        "sasl.mechanisms"
    );
}

#[test]
fn sasl_needs_username_and_password() {
    assert_eq!(
        failing_key(&[
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.password", "pw")
        ]),
        "sasl.username"
    );
    assert_eq!(
        failing_key(&[
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.username", "u")
        ]),
        "sasl.password"
    );
}

#[test]
fn sasl_settings_without_a_sasl_protocol_are_refused() {
    assert_eq!(
        failing_key(&[
            ("sasl.username", "u"),
            ("sasl.password", "p"),
            ("security.protocol", "PLAINTEXT")
        ]),
        "security.protocol"
    );
}

#[test]
fn sasl_protocol_is_derived_when_not_given() {
    let c = parse(&[("sasl.username", "u"), ("sasl.password", "p")]).unwrap();
    assert_eq!(c.security_protocol(), SecurityProtocol::SaslPlaintext);
}

const PLAIN_JAAS: &str = r#"org.apache.kafka.common.security.plain.PlainLoginModule required username="alice" password="alice-secret";"#;
const SCRAM_JAAS: &str = r#"org.apache.kafka.common.security.scram.ScramLoginModule required username="bob" password="bob-secret";"#;

#[test]
fn java_jaas_config_supplies_credentials() {
    let c = parse(&[
        ("security.protocol", "SASL_SSL"),
        ("ssl.ca.location", "/ca.pem"),
        ("sasl.mechanism", "PLAIN"),
        ("sasl.jaas.config", PLAIN_JAAS),
    ])
    .unwrap();
    match c.security {
        Security::SaslSsl(_, sasl) => {
            assert_eq!(sasl.mechanism, SaslMechanism::Plain);
            assert_eq!(sasl.username, "alice");
            assert_eq!(sasl.password, "alice-secret");
        }
        other => panic!("{other:?}"),
    }
    let c = parse(&[
        ("security.protocol", "SASL_PLAINTEXT"),
        ("sasl.mechanism", "SCRAM-SHA-512"),
        ("sasl.jaas.config", SCRAM_JAAS),
    ])
    .unwrap();
    match c.security {
        Security::SaslPlaintext(sasl) => {
            assert_eq!(sasl.mechanism, SaslMechanism::ScramSha512);
            assert_eq!(sasl.username, "bob");
        }
        other => panic!("{other:?}"),
    }
    // PLAIN can be inferred from the login module; SCRAM cannot (which hash?).
    let c = parse(&[
        ("security.protocol", "SASL_PLAINTEXT"),
        ("sasl.jaas.config", PLAIN_JAAS),
    ])
    .unwrap();
    assert!(matches!(
        c.security,
        Security::SaslPlaintext(SaslConfig {
            mechanism: SaslMechanism::Plain,
            ..
        })
    ));
    assert_eq!(
        failing_key(&[
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.jaas.config", SCRAM_JAAS)
        ]),
        "sasl.mechanism"
    );
}

#[test]
fn jaas_errors_name_the_jaas_key() {
    let sasl = ("security.protocol", "SASL_PLAINTEXT");
    assert_eq!(
        failing_key(&[sasl, ("sasl.jaas.config", "garbage")]),
        "sasl.jaas.config"
    );
    assert_eq!(
        failing_key(&[
            sasl,
            ("sasl.mechanism", "SCRAM-SHA-256"),
            ("sasl.jaas.config", PLAIN_JAAS)
        ]),
        "sasl.jaas.config"
    );
    assert_eq!(
        failing_key(&[
            sasl,
            ("sasl.jaas.config", PLAIN_JAAS),
            ("sasl.username", "x")
        ]),
        "sasl.jaas.config"
    );
}

#[test]
fn jaas_password_never_appears_in_errors_or_debug() {
    let err = parse(&[
        ("security.protocol", "SASL_PLAINTEXT"),
        ("sasl.mechanism", "SCRAM-SHA-256"),
        ("sasl.jaas.config", PLAIN_JAAS),
    ])
    .unwrap_err();
    assert!(!err.to_string().contains("alice-secret"), "{err}");
}

#[test]
fn ssl_locations_from_librdkafka_names() {
    let c = parse(&[
        ("security.protocol", "SSL"),
        ("ssl.ca.location", "/etc/ca.pem"),
        ("ssl.certificate.location", "/etc/client.pem"),
        ("ssl.key.location", "/etc/client.key"),
        ("ssl.endpoint.identification.algorithm", "https"),
    ])
    .unwrap();
    match c.security {
        Security::Ssl(tls) => {
            assert_eq!(tls.ca_pem, Some(PathBuf::from("/etc/ca.pem")));
            assert_eq!(tls.client_cert_pem, Some(PathBuf::from("/etc/client.pem")));
            assert_eq!(tls.client_key_pem, Some(PathBuf::from("/etc/client.key")));
            assert!(tls.verify_hostname);
            assert!(tls.verify_certificate);
        }
        other => panic!("{other:?}"),
    }
    let c = parse(&[
        ("security.protocol", "SSL"),
        ("enable.ssl.certificate.verification", "false"),
    ])
    .unwrap();
    assert!(matches!(
        c.security,
        Security::Ssl(TlsConfig {
            verify_certificate: false,
            ..
        })
    ));
    assert_eq!(
        failing_key(&[
            ("security.protocol", "SSL"),
            ("enable.ssl.certificate.verification", "maybe")
        ]),
        "enable.ssl.certificate.verification"
    );
}

#[test]
fn ssl_pem_stores_from_java_names() {
    let c = parse(&[
        ("security.protocol", "SASL_SSL"),
        ("sasl.username", "u"),
        ("sasl.password", "p"),
        ("ssl.truststore.location", "/etc/ca.pem"),
        ("ssl.truststore.type", "PEM"),
        ("ssl.keystore.location", "/etc/both.pem"),
        ("ssl.keystore.type", "pem"),
        ("ssl.endpoint.identification.algorithm", ""),
    ])
    .unwrap();
    match c.security {
        Security::SaslSsl(tls, _) => {
            assert_eq!(
                tls.ca_pem.as_deref(),
                Some(std::path::Path::new("/etc/ca.pem"))
            );
            assert_eq!(tls.client_cert_pem, tls.client_key_pem);
            assert!(!tls.verify_hostname);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn ssl_without_a_ca_is_refused_unless_verification_is_off() {
    assert_eq!(
        failing_key(&[("security.protocol", "SSL")]),
        "ssl.ca.location"
    );
    assert_eq!(
        failing_key(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.username", "u"),
            ("sasl.password", "p")
        ]),
        "ssl.ca.location"
    );
    let c = parse(&[
        ("security.protocol", "SSL"),
        ("enable.ssl.certificate.verification", "false"),
    ])
    .unwrap();
    assert!(matches!(
        c.security,
        Security::Ssl(TlsConfig {
            verify_certificate: false,
            ca_pem: None,
            ..
        })
    ));
}

#[test]
fn ssl_error_paths_name_the_key() {
    let ssl = ("security.protocol", "SSL");
    assert_eq!(
        failing_key(&[
            ssl,
            ("ssl.truststore.location", "/x.jks"),
            ("ssl.truststore.type", "JKS")
        ]),
        "ssl.truststore.type"
    );
    assert_eq!(
        failing_key(&[ssl, ("ssl.truststore.location", "/x.jks")]),
        "ssl.truststore.type"
    );
    assert_eq!(
        failing_key(&[
            ssl,
            ("ssl.truststore.location", "/a"),
            ("ssl.truststore.type", "PEM"),
            ("ssl.ca.location", "/b")
        ]),
        "ssl.truststore.location"
    );
    assert_eq!(
        failing_key(&[ssl, ("ssl.certificate.location", "/c")]),
        "ssl.key.location"
    );
    assert_eq!(
        failing_key(&[ssl, ("ssl.key.location", "/k")]),
        "ssl.certificate.location"
    );
    assert_eq!(
        failing_key(&[
            ssl,
            ("ssl.keystore.location", "/k.p12"),
            ("ssl.keystore.type", "PKCS12")
        ]),
        "ssl.keystore.type"
    );
    assert_eq!(
        failing_key(&[ssl, ("ssl.keystore.location", "/k.pem")]),
        "ssl.keystore.type"
    );
    assert_eq!(
        failing_key(&[
            ssl,
            ("ssl.keystore.location", "/k.pem"),
            ("ssl.keystore.type", "PEM"),
            ("ssl.certificate.location", "/c"),
            ("ssl.key.location", "/k")
        ]),
        "ssl.keystore.location"
    );
    assert_eq!(
        failing_key(&[ssl, ("ssl.endpoint.identification.algorithm", "ldap")]),
        "ssl.endpoint.identification.algorithm"
    );
    assert_eq!(
        failing_key(&[
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.username", "u"),
            ("sasl.password", "p"),
            ("ssl.ca.location", "/ca")
        ]),
        "security.protocol"
    );
}

#[test]
fn builder_matches_properties() {
    let built = ClientConfig::builder()
        .bootstrap("h1:1")
        .bootstrap("h2:2,h3:3")
        .client_id("svc")
        .client_rack("r1")
        .sasl(SaslMechanism::ScramSha256, "u", "p")
        .ssl_ca_location("/ca.pem")
        .ssl_client_certificate("/c.pem", "/k.pem")
        .ssl_verify_hostname(false)
        .ssl_verify_certificate(false)
        .request_timeout(Duration::from_secs(1))
        .connect_timeout(Duration::from_secs(2))
        .metadata_max_age(Duration::from_secs(3))
        .retry_backoff(Duration::from_millis(4), Duration::from_millis(40))
        .reconnect_backoff(Duration::from_millis(5), Duration::from_millis(50))
        .connections_max_idle(Duration::from_secs(6))
        .default_api_timeout(Duration::from_secs(7))
        .max_frame_bytes(8_000)
        .build()
        .unwrap();
    let parsed = ClientConfig::from_properties([
        ("bootstrap.servers", "h1:1,h2:2,h3:3"),
        ("client.id", "svc"),
        ("client.rack", "r1"),
        ("security.protocol", "SASL_SSL"),
        ("sasl.mechanism", "SCRAM-SHA-256"),
        ("sasl.username", "u"),
        ("sasl.password", "p"),
        ("ssl.ca.location", "/ca.pem"),
        ("ssl.certificate.location", "/c.pem"),
        ("ssl.key.location", "/k.pem"),
        ("ssl.endpoint.identification.algorithm", "none"),
        ("enable.ssl.certificate.verification", "false"),
        ("request.timeout.ms", "1000"),
        ("socket.connection.setup.timeout.ms", "2000"),
        ("metadata.max.age.ms", "3000"),
        ("retry.backoff.ms", "4"),
        ("retry.backoff.max.ms", "40"),
        ("reconnect.backoff.ms", "5"),
        ("reconnect.backoff.max.ms", "50"),
        ("connections.max.idle.ms", "6000"),
        ("default.api.timeout.ms", "7000"),
        ("receive.message.max.bytes", "8000"),
    ])
    .unwrap();
    assert_eq!(format!("{built:?}"), format!("{parsed:?}"));
    assert_eq!(built.security_protocol(), SecurityProtocol::SaslSsl);
}

#[test]
fn take_from_leaves_other_configs_keys() {
    let mut p: Properties = [
        ("bootstrap.servers", "h:1"),
        ("linger.ms", "5"),
        ("acks", "all"),
    ]
    .into_iter()
    .collect();
    let c = ClientConfig::take_from(&mut p).unwrap();
    assert_eq!(c.bootstrap_servers, vec!["h:1"]);
    assert_eq!(p.len(), 2);
    assert_eq!(
        p.take_millis("linger.ms").unwrap(),
        Some(Duration::from_millis(5))
    );
    assert_eq!(p.take("acks").as_deref(), Some("all"));
    p.finish().unwrap();
}

#[test]
fn every_listed_property_is_accepted() {
    // CLIENT_PROPERTIES is what the docs promise; a key listed there but not consumed
    // would be reported as unknown.
    let mut p = Properties::new();
    for key in CLIENT_PROPERTIES {
        let value = match *key {
            "bootstrap.servers" => "h:1",
            "security.protocol" => "SASL_SSL",
            "sasl.mechanism" | "sasl.mechanisms" => "PLAIN",
            "sasl.jaas.config" | "ssl.truststore.location" | "ssl.keystore.location" => continue,
            "ssl.truststore.type" | "ssl.keystore.type" => "PEM",
            "ssl.endpoint.identification.algorithm" => "https",
            "enable.ssl.certificate.verification" => "true",
            k if k.ends_with(".ms") || k.ends_with(".bytes") => "5000",
            _ => "x",
        };
        p.set(key, value);
    }
    ClientConfig::take_from(&mut p).unwrap();
    p.finish().unwrap();
}

#[test]
fn deserialises_from_toml_with_dotted_names() {
    let toml_text = r#"
        "bootstrap.servers" = "k1:9092,k2:9092"
        client.id = "from-toml"
        "request.timeout.ms" = 1500
        security.protocol = "SASL_PLAINTEXT"
        sasl.mechanism = "SCRAM-SHA-256"
        sasl.username = "u"
        sasl.password = "p"
    "#;
    let c: ClientConfig = toml::from_str(toml_text).unwrap();
    assert_eq!(c.bootstrap_servers, vec!["k1:9092", "k2:9092"]);
    assert_eq!(c.client_id, "from-toml");
    assert_eq!(c.request_timeout, Duration::from_millis(1500));
    assert_eq!(c.security_protocol(), SecurityProtocol::SaslPlaintext);
}

#[test]
fn deserialises_from_json_with_numbers_and_lists() {
    let c: ClientConfig = serde_json::from_str(
        r#"{"bootstrap.servers": ["a:1", "b:2"], "metadata.max.age.ms": 1000, "client.rack": "r"}"#,
    )
    .unwrap();
    assert_eq!(c.bootstrap_servers, vec!["a:1", "b:2"]);
    assert_eq!(c.metadata_max_age, Duration::from_secs(1));
}

#[test]
fn file_errors_name_the_key() {
    let err =
        serde_json::from_str::<ClientConfig>(r#"{"bootstrap.servers": "a:1", "fetch.mystery": 1}"#)
            .unwrap_err();
    assert!(err.to_string().contains("fetch.mystery"), "{err}");
    let err = toml::from_str::<ClientConfig>(
        "\"bootstrap.servers\" = \"a:1\"\n\"request.timeout.ms\" = \"soon\"\n",
    )
    .unwrap_err();
    assert!(err.to_string().contains("request.timeout.ms"), "{err}");
}

#[test]
fn debug_output_never_shows_passwords() {
    let c = parse(&[
        ("security.protocol", "SASL_PLAINTEXT"),
        ("sasl.mechanism", "SCRAM-SHA-256"),
        ("sasl.username", "alice"),
        ("sasl.password", "very-secret-pw"),
    ])
    .unwrap();
    let shown = format!("{c:?} {:?}", c.connection_config());
    assert!(shown.contains("alice"), "{shown}");
    assert!(!shown.contains("very-secret-pw"), "{shown}");
}
