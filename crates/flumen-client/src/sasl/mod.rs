//! SASL authentication on a fresh connection (SaslHandshake v1 + SaslAuthenticate), and
//! re-authentication before the session the broker granted expires.
//!
//! # References
//! - KIP-152: SaslAuthenticate requests carry the SASL tokens.
//! - KIP-368: the broker reports `session_lifetime_ms`; the client re-authenticates on the same
//!   connection before then. Like the Java client we start at a random point between 85% and
//!   95% of the lifetime. The exchange runs on an exclusive lane of the writer, so no other
//!   request sits between its messages; requests queued meanwhile wait and then go out.

mod plain;
mod scram;

use std::time::Duration;

use bytes::Bytes;
use flumen_protocol::ErrorCode;
use flumen_protocol::messages::{
    ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, StrBytes,
};
use rand::Rng;

use self::scram::{ScramClient, ScramHash};
use crate::connection::{Connection, Lane, SaslConfig, SaslMechanism};
use crate::error::{Error, Result};

/// Authenticates `conn`; returns the session lifetime if the broker set one.
pub(crate) async fn authenticate(
    conn: &Connection,
    lane: Lane<'_>,
    config: &SaslConfig,
) -> Result<Option<Duration>> {
    let mechanism = config.mechanism.name();
    let fail = |message: String| Error::Authentication {
        addr: conn.addr().to_owned(),
        mechanism,
        message,
    };
    if conn
        .api_version(ApiKey::SaslHandshake)
        .is_none_or(|v| v < 1)
    {
        return Err(fail(
            "the broker does not support SaslHandshake v1".to_owned(),
        ));
    }
    let handshake = conn
        .send_on(
            lane,
            &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism)),
            1,
        )
        .await?;
    if handshake.error_code != 0 {
        let enabled: Vec<&str> = handshake.mechanisms.iter().map(|m| m.as_str()).collect();
        return Err(fail(format!(
            "{} (the listener enables: {})",
            ErrorCode::from_code(handshake.error_code),
            enabled.join(", ")
        )));
    }
    let version = conn
        .api_version(ApiKey::SaslAuthenticate)
        .ok_or_else(|| fail("the broker does not support SaslAuthenticate".to_owned()))?;
    let step = |token: Vec<u8>| async move {
        let response: SaslAuthenticateResponse = conn
            .send_on(
                lane,
                &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token)),
                version,
            )
            .await?;
        if response.error_code != 0 {
            let code = ErrorCode::from_code(response.error_code);
            let message = match &response.error_message {
                Some(m) if !m.is_empty() => format!("{m} ({})", code.name()),
                _ => code.to_string(),
            };
            return Err(fail(message));
        }
        Ok(response)
    };
    let last = match config.mechanism {
        SaslMechanism::Plain => {
            step(plain::initial_response(&config.username, &config.password)).await?
        }
        SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512 => {
            let hash = if config.mechanism == SaslMechanism::ScramSha256 {
                ScramHash::Sha256
            } else {
                ScramHash::Sha512
            };
            let mut client = ScramClient::new(hash, &config.username, &config.password);
            let server_first = step(client.client_first()).await?;
            let client_final = client
                .client_final(&server_first.auth_bytes)
                .map_err(fail)?;
            let server_final = step(client_final).await?;
            client
                .verify_server_final(&server_final.auth_bytes)
                .map_err(fail)?;
            server_final
        }
    };
    Ok(u64::try_from(last.session_lifetime_ms)
        .ok()
        .filter(|&ms| ms > 0)
        .map(Duration::from_millis))
}

/// Re-authenticates `conn` in the background before each session expires.
pub(crate) fn schedule_reauthentication(conn: &Connection, config: SaslConfig, lifetime: Duration) {
    let weak = conn.downgrade();
    tokio::spawn(async move {
        let mut lifetime = lifetime;
        loop {
            let fraction = rand::thread_rng().gen_range(0.85..0.95);
            tokio::time::sleep(lifetime.mul_f64(fraction)).await;
            let Some(conn) = weak.upgrade() else { return };
            if conn.is_closed() {
                return;
            }
            let outcome = match conn.exclusive_lane() {
                Ok(lane) => authenticate(&conn, Lane::Exclusive(&lane), &config).await,
                Err(e) => Err(e),
            };
            match outcome {
                Ok(Some(next)) => lifetime = next,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(addr = conn.addr(), error = %e, "SASL re-authentication failed");
                    conn.close_with(format!("SASL re-authentication failed: {e}"));
                    return;
                }
            }
        }
    });
}
