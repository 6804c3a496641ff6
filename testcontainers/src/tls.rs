//! The throw-away certificate authority and broker certificate for the SSL listener.

use std::path::{Path, PathBuf};
use std::sync::Arc;

#[cfg(feature = "tls")]
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};

use crate::error::{Error, Result};

/// PEM files written for one cluster: the CA (for clients) and the broker key store.
#[derive(Debug)]
pub(crate) struct TlsMaterial {
    /// CA certificate, PEM; handed to tests as `ca_pem_path()`.
    pub ca_pem: PathBuf,
    /// Private key (PKCS#8) followed by the certificate chain, PEM: Kafka's `ssl.keystore.type=PEM`.
    pub keystore_pem: PathBuf,
    /// The CA certificate in DER, for the harness's own readiness probe.
    pub ca_der: Vec<u8>,
}

/// Generates a CA and one broker certificate valid for `127.0.0.1` and `localhost` (shared
/// by all brokers of the cluster: they all listen on 127.0.0.1), writes them into `dir`.
#[cfg(not(feature = "tls"))]
pub(crate) fn generate(_dir: &Path) -> Result<TlsMaterial> {
    Err(Error::Tls(
        "this build of the harness has no TLS listener (its `tls` feature is off)".to_owned(),
    ))
}

/// Generates a CA and one broker certificate valid for `127.0.0.1` and `localhost` (shared
/// by all brokers of the cluster: they all listen on 127.0.0.1), writes them into `dir`.
#[cfg(feature = "tls")]
pub(crate) fn generate(dir: &Path) -> Result<TlsMaterial> {
    let tls = |e: rcgen::Error| Error::Tls(e.to_string());

    let ca_key = KeyPair::generate().map_err(tls)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(tls)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "flumen test CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca = ca_params.self_signed(&ca_key).map_err(tls)?;

    let broker_key = KeyPair::generate().map_err(tls)?;
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).map_err(tls)?;
    params
        .subject_alt_names
        .push(SanType::IpAddress(std::net::IpAddr::V4(
            std::net::Ipv4Addr::LOCALHOST,
        )));
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let broker = params.signed_by(&broker_key, &ca, &ca_key).map_err(tls)?;

    let ca_pem = dir.join("ca.pem");
    let keystore_pem = dir.join("broker-keystore.pem");
    write(&ca_pem, &ca.pem())?;
    write(
        &keystore_pem,
        &format!("{}{}{}", broker_key.serialize_pem(), broker.pem(), ca.pem()),
    )?;
    Ok(TlsMaterial {
        ca_pem,
        keystore_pem,
        ca_der: ca.der().to_vec(),
    })
}

#[cfg(feature = "tls")]
fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// A rustls client configuration that trusts exactly the given CA (DER).
pub(crate) fn client_config(ca_der: &[u8]) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(ca_der.to_vec()))
        .map_err(|e| Error::Tls(format!("CA certificate rejected by rustls: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
