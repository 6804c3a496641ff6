//! ApiVersions negotiation: per API, the highest version both the broker and kafka-protocol support.
//!
//! We ask at the newest ApiVersions version we know (v3+ carries our software name and
//! version, KIP-511). A broker that does not know that version answers UNSUPPORTED_VERSION in
//! the v0 layout, listing what it supports; we then retry once at the version it offers.

use flumen_protocol::ErrorCode;
use flumen_protocol::header::decode_response;
use flumen_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, Message, StrBytes,
};

use super::{Connection, Lane};
use crate::error::{Error, Result};

/// Client software name sent in ApiVersions v3+.
const SOFTWARE_NAME: &str = "flumen";

/// The negotiated version of each API the broker and we both support.
#[derive(Debug, Clone, Default)]
pub struct ApiVersions {
    /// Indexed by API key; `None` where there is no common version.
    max: Vec<Option<i16>>,
}

impl ApiVersions {
    /// Intersects the broker's announced ranges with kafka-protocol's.
    pub fn from_response(response: &ApiVersionsResponse) -> Self {
        let mut max = Vec::new();
        for announced in &response.api_keys {
            let Ok(key) = ApiKey::try_from(announced.api_key) else {
                continue;
            };
            let ours = key.valid_versions();
            let hi = ours.max.min(announced.max_version);
            let lo = ours.min.max(announced.min_version);
            if hi < lo {
                continue;
            }
            let index = key as usize;
            if max.len() <= index {
                max.resize(index + 1, None);
            }
            max[index] = Some(hi);
        }
        ApiVersions { max }
    }

    /// The highest common version of `key`.
    pub fn max_version(&self, key: ApiKey) -> Option<i16> {
        self.max.get(key as usize).copied().flatten()
    }
}

/// Runs the ApiVersions exchange on a fresh connection.
pub(crate) async fn negotiate(conn: &Connection) -> Result<ApiVersions> {
    let newest = ApiVersionsRequest::VERSIONS.max;
    let request = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str(SOFTWARE_NAME))
        .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
    let frame = conn.round_trip(Lane::Main, &request, newest).await?;
    let response = match decode_response::<ApiVersionsRequest>(frame.clone(), newest) {
        Ok((_, response)) if response.error_code != ErrorCode::UnsupportedVersion.code() => {
            response
        }
        first_attempt => {
            // The broker answered in the v0 layout; read what it offers and ask again.
            let (_, v0) =
                decode_response::<ApiVersionsRequest>(frame, 0).map_err(
                    |e| match first_attempt {
                        Err(original) => Error::from(original),
                        Ok(_) => Error::from(e),
                    },
                )?;
            let offered = v0
                .api_keys
                .iter()
                .find(|k| k.api_key == ApiKey::ApiVersions as i16)
                .map_or(0, |k| k.max_version)
                .clamp(0, newest);
            let retry = if offered >= 3 {
                request
            } else {
                ApiVersionsRequest::default()
            };
            conn.send_on(Lane::Main, &retry, offered).await?
        }
    };
    Error::check_code("ApiVersionsRequest", response.error_code, None)?;
    Ok(ApiVersions::from_response(&response))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flumen_protocol::messages::api_versions_response::ApiVersion;

    #[test]
    fn versions_are_capped_by_both_sides() {
        let response = ApiVersionsResponse::default().with_api_keys(vec![
            ApiVersion::default()
                .with_api_key(ApiKey::Metadata as i16)
                .with_min_version(0)
                .with_max_version(i16::MAX),
            ApiVersion::default()
                .with_api_key(ApiKey::Produce as i16)
                .with_min_version(0)
                .with_max_version(5),
            ApiVersion::default()
                .with_api_key(ApiKey::Fetch as i16)
                .with_min_version(0)
                .with_max_version(1),
            ApiVersion::default().with_api_key(999).with_max_version(3),
        ]);
        let v = ApiVersions::from_response(&response);
        assert_eq!(
            v.max_version(ApiKey::Metadata),
            Some(ApiKey::Metadata.valid_versions().max)
        );
        assert_eq!(v.max_version(ApiKey::Produce), Some(5));
        // kafka-protocol starts Fetch at v4, the broker stops at v1: nothing in common.
        assert_eq!(v.max_version(ApiKey::Fetch), None);
        assert_eq!(v.max_version(ApiKey::ListOffsets), None);
    }
}
