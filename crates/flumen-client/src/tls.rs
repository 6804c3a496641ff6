//! TLS for broker connections: rustls (ring provider), CA from a PEM file, optional client certificate.
//!
//! Host names are verified by default, against DNS or IP SANs depending on how the broker
//! address is written. Handshake failures are sorted into "the peer does not speak TLS" (a
//! PLAINTEXT listener closes on our ClientHello, or answers non-TLS bytes) and real TLS errors
//! (untrusted certificate, wrong name), because the fix differs.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::connection::TlsConfig;
use crate::error::{Error, Result};

/// Runs the TLS handshake over `tcp` for the broker at `addr` (`host:port`).
pub(crate) async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    addr: &str,
    tcp: S,
    config: &TlsConfig,
) -> Result<TlsStream<S>> {
    let client_config = client_config(config)?;
    let server_name = server_name(addr)?;
    TlsConnector::from(Arc::new(client_config))
        .connect(server_name, tcp)
        .await
        .map_err(|e| classify_handshake_error(addr, e))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the rustls client configuration from our settings.
pub(crate) fn client_config(config: &TlsConfig) -> Result<ClientConfig> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error("ssl.protocol", e.to_string()))?;
    let verifier: Arc<dyn ServerCertVerifier> = if !config.verify_certificate {
        Arc::new(AcceptAnyCertificate {
            algorithms: provider.signature_verification_algorithms,
        })
    } else {
        let Some(ca) = &config.ca_pem else {
            return Err(config_error(
                "ssl.ca.location",
                "a CA certificate file is needed to verify the brokers (or disable verification)"
                    .to_owned(),
            ));
        };
        let roots = load_roots(ca)?;
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| config_error("ssl.ca.location", e.to_string()))?;
        if config.verify_hostname {
            webpki
        } else {
            Arc::new(IgnoreHostname(webpki))
        }
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match (&config.client_cert_pem, &config.client_key_pem) {
        (Some(cert), Some(key)) => {
            let chain = load_certs(cert, "ssl.certificate.location")?;
            let key_der = rustls_pemfile::private_key(&mut open(key, "ssl.key.location")?)
                .map_err(|e| config_error("ssl.key.location", format!("{}: {e}", key.display())))?
                .ok_or_else(|| {
                    config_error(
                        "ssl.key.location",
                        format!("no private key in {}", key.display()),
                    )
                })?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| config_error("ssl.key.location", e.to_string()))
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(_), None) => Err(config_error(
            "ssl.key.location",
            "a client certificate needs its key".to_owned(),
        )),
        (None, Some(_)) => Err(config_error(
            "ssl.certificate.location",
            "a client key needs its certificate".to_owned(),
        )),
    }
}

fn config_error(key: &str, message: String) -> Error {
    Error::Config {
        key: key.to_owned(),
        message,
    }
}

fn open(path: &Path, key: &str) -> Result<BufReader<File>> {
    File::open(path)
        .map(BufReader::new)
        .map_err(|e| config_error(key, format!("cannot open {}: {e}", path.display())))
}

fn load_certs(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = rustls_pemfile::certs(&mut open(path, key)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| config_error(key, format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(config_error(
            key,
            format!("no PEM certificate in {}", path.display()),
        ));
    }
    Ok(certs)
}

fn load_roots(path: &Path) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path, "ssl.ca.location")? {
        roots
            .add(cert)
            .map_err(|e| config_error("ssl.ca.location", format!("{}: {e}", path.display())))?;
    }
    Ok(roots)
}

/// The TLS server name for `host:port` (`[v6]:port` too); IP literals become IP names.
pub(crate) fn server_name(addr: &str) -> Result<ServerName<'static>> {
    let host = match addr.rsplit_once(':') {
        Some((host, _port)) => host,
        None => addr,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned()).map_err(|e| Error::Tls {
        addr: addr.to_owned(),
        message: format!("`{host}` is not a valid TLS server name: {e}"),
    })
}

fn classify_handshake_error(addr: &str, e: std::io::Error) -> Error {
    use std::io::ErrorKind;
    if let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        return match tls {
            rustls::Error::InvalidMessage(_)
            | rustls::Error::InappropriateMessage { .. }
            | rustls::Error::InappropriateHandshakeMessage { .. } => Error::TlsMismatch {
                addr: addr.to_owned(),
                message: format!(
                    "the peer does not speak TLS ({tls}); it is probably a PLAINTEXT or SASL_PLAINTEXT listener"
                ),
            },
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => Error::Tls {
                addr: addr.to_owned(),
                message: format!(
                    "{tls}; connect by a name the certificate lists, or turn off host-name verification"
                ),
            },
            rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer | CertificateError::BadSignature,
            ) => Error::Tls {
                addr: addr.to_owned(),
                message: format!(
                    "{tls}: the broker's certificate is not signed by the configured CA"
                ),
            },
            other => Error::Tls {
                addr: addr.to_owned(),
                message: other.to_string(),
            },
        };
    }
    match e.kind() {
        ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe => {
            Error::TlsMismatch {
                addr: addr.to_owned(),
                message: format!(
                    "the peer closed the connection during the TLS handshake ({e}); it probably does not speak TLS \
                 (a PLAINTEXT or SASL_PLAINTEXT listener?)"
                ),
            }
        }
        _ => Error::Tls {
            addr: addr.to_owned(),
            message: e.to_string(),
        },
    }
}

/// Full chain verification, minus the host-name check.
#[derive(Debug)]
struct IgnoreHostname(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for IgnoreHostname {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// No verification at all (explicitly asked for with `verify_certificate: false`).
#[derive(Debug)]
struct AcceptAnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::PrivateKeyDer;
    use rustls::server::ServerConfig;

    /// A CA, and a server certificate it signed for `names`; the CA PEM is written to a file.
    struct Pki {
        _dir: tempfile::TempDir,
        ca_path: std::path::PathBuf,
        server: ServerConfig,
        /// Like `server`, but requires a client certificate signed by the same CA.
        mutual: ServerConfig,
        client_cert_path: std::path::PathBuf,
        client_key_path: std::path::PathBuf,
    }

    fn pki(names: &[&str]) -> Pki {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf_params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, ca.pem()).unwrap();
        let server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap(),
            )
            .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        let client_verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .unwrap();
        let mutual = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(
                vec![leaf.der().clone()],
                PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap(),
            )
            .unwrap();
        let client_key = rcgen::KeyPair::generate().unwrap();
        let client = rcgen::CertificateParams::new(vec!["client".to_owned()])
            .unwrap()
            .signed_by(&client_key, &ca, &ca_key)
            .unwrap();
        let client_cert_path = dir.path().join("client.pem");
        let client_key_path = dir.path().join("client.key");
        std::fs::write(&client_cert_path, client.pem()).unwrap();
        std::fs::write(&client_key_path, client_key.serialize_pem()).unwrap();
        Pki {
            _dir: dir,
            ca_path,
            server,
            mutual,
            client_cert_path,
            client_key_path,
        }
    }

    /// Runs our client handshake against an in-memory server presenting `pki`'s certificate.
    async fn handshake_with(pki: &Pki, addr: &str, config: &TlsConfig) -> Result<()> {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(pki.server.clone()));
        let server_side = tokio::spawn(async move { acceptor.accept(server).await.map(drop) });
        let result = handshake(addr, client, config).await.map(drop);
        drop(server_side);
        result
    }

    /// Runs a handshake against a server that requires a client certificate; returns whether
    /// the *server* accepted us (with TLS 1.3 the client finishes before the server decides).
    async fn mutual_handshake(pki: &Pki, config: &TlsConfig) -> bool {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(pki.mutual.clone()));
        let server_side = tokio::spawn(async move { acceptor.accept(server).await.map(drop) });
        let client_side = handshake("127.0.0.1:9093", client, config).await;
        let accepted = tokio::time::timeout(std::time::Duration::from_secs(5), server_side)
            .await
            .expect("server handshake finishes")
            .expect("server task")
            .is_ok();
        drop(client_side);
        accepted
    }

    #[tokio::test(flavor = "current_thread")]
    async fn client_certificate_is_presented_when_configured() {
        let pki = pki(&["127.0.0.1"]);
        let with_cert = TlsConfig {
            client_cert_pem: Some(pki.client_cert_path.clone()),
            client_key_pem: Some(pki.client_key_path.clone()),
            ..TlsConfig::with_ca(&pki.ca_path)
        };
        assert!(mutual_handshake(&pki, &with_cert).await);
        assert!(!mutual_handshake(&pki, &TlsConfig::with_ca(&pki.ca_path)).await);
    }

    #[test]
    fn client_certificate_without_key_is_a_config_error() {
        let pki = pki(&["127.0.0.1"]);
        let config = TlsConfig {
            client_cert_pem: Some(pki.client_cert_path.clone()),
            ..TlsConfig::with_ca(&pki.ca_path)
        };
        let err = client_config(&config).unwrap_err();
        assert!(
            matches!(&err, Error::Config { key, .. } if key == "ssl.key.location"),
            "{err}"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn certificate_for_another_host_is_refused() {
        let pki = pki(&["kafka.example"]);
        let err = handshake_with(&pki, "127.0.0.1:9093", &TlsConfig::with_ca(&pki.ca_path))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Tls { message, .. } if message.contains("not valid for name")),
            "{err}"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn hostname_check_can_be_turned_off_but_the_chain_is_still_checked() {
        let pki = pki(&["kafka.example"]);
        let config = TlsConfig {
            verify_hostname: false,
            ..TlsConfig::with_ca(&pki.ca_path)
        };
        handshake_with(&pki, "127.0.0.1:9093", &config)
            .await
            .unwrap();
        let stranger = self::pki(&["kafka.example"]);
        let err = handshake_with(&stranger, "127.0.0.1:9093", &config)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Tls { message, .. } if message.contains("invalid peer certificate")),
            "{err}"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn ip_and_dns_names_are_matched_against_the_sans() {
        let pki = pki(&["127.0.0.1", "kafka.example"]);
        let config = TlsConfig::with_ca(&pki.ca_path);
        handshake_with(&pki, "127.0.0.1:9093", &config)
            .await
            .unwrap();
        handshake_with(&pki, "kafka.example:9093", &config)
            .await
            .unwrap();
    }

    #[test]
    fn server_names_accept_hosts_and_ip_literals() {
        assert!(matches!(
            server_name("127.0.0.1:9093").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("[::1]:9093").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("kafka.example:9093").unwrap(),
            ServerName::DnsName(_)
        ));
    }

    #[test]
    fn verification_without_a_ca_is_a_config_error() {
        let err = client_config(&TlsConfig::default()).unwrap_err();
        assert!(
            matches!(&err, Error::Config { key, .. } if key == "ssl.ca.location"),
            "{err}"
        );
    }

    #[test]
    fn missing_ca_file_names_the_path() {
        let err = client_config(&TlsConfig::with_ca("/nonexistent/ca.pem")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }
}
