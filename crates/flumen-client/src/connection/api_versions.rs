//! ApiVersions negotiation: per API, the highest version both the broker and kafka-protocol
//! can speak (its request structs' `VERSIONS`, see `request_versions.rs`).
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
    /// The oldest Fetch version the broker announced: Kafka 4.0 removed v0-v3 (KIP-896),
    /// which tells a 3.x broker from a 4.x one (brokers do not announce their release).
    /// Not Produce: 4.x brokers still announce Produce v0 (4.4.0 does).
    fetch_min: Option<i16>,
    /// The cluster-wide finalized features (name, max version level), as the broker knew
    /// them when it answered (KIP-584; ApiVersions v3+, empty before).
    finalized: Vec<(String, i16)>,
}

/// The oldest Fetch version a Kafka 4.0 or newer broker accepts (KIP-896).
const KAFKA_4_FETCH_MIN: i16 = 4;

impl ApiVersions {
    /// Intersects the broker's announced ranges with what kafka-protocol's request structs
    /// encode.
    pub fn from_response(response: &ApiVersionsResponse) -> Self {
        let mut max = Vec::new();
        let fetch_min = response
            .api_keys
            .iter()
            .find(|k| k.api_key == ApiKey::Fetch as i16)
            .map(|k| k.min_version);
        for announced in &response.api_keys {
            let Ok(key) = ApiKey::try_from(announced.api_key) else {
                continue;
            };
            let ours = super::request_versions::request_versions(key);
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
        // The list is valid only with an epoch (-1: the broker does not know them yet).
        let finalized = if response.finalized_features_epoch >= 0 {
            response
                .finalized_features
                .iter()
                .map(|f| (f.name.to_string(), f.max_version_level))
                .collect()
        } else {
            Vec::new()
        };
        ApiVersions {
            max,
            fetch_min,
            finalized,
        }
    }

    /// The finalized level of the cluster-wide feature `name` (e.g. `transaction.version`,
    /// `metadata.version`), as the broker reported it at connect time; `None` when the
    /// feature is not finalized (level 0) or the broker does not report features.
    pub fn finalized_feature(&self, name: &str) -> Option<i16> {
        self.finalized
            .iter()
            .find(|(n, _)| n == name)
            .map(|&(_, level)| level)
    }

    /// The broker's release as far as its ApiVersions answer tells (brokers do not announce
    /// it): "Kafka 3.x or older" while it still offers Fetch v0-v3, else "Kafka 4.0 or
    /// newer". For error messages.
    pub fn release_estimate(&self) -> &'static str {
        match self.fetch_min {
            Some(min) if min < KAFKA_4_FETCH_MIN => {
                "Kafka 3.x or older (it still offers Fetch v0-v3, which Kafka 4.0 removed)"
            }
            Some(_) => "Kafka 4.0 or newer (it no longer offers Fetch v0-v3)",
            None => "a broker of unknown release (it offers no Fetch API)",
        }
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
        // kafka-protocol's ApiKey claims OffsetFetch v10, its request struct stops at v9
        // (Kafka 4.2+ brokers offer v10).
        let newer = ApiVersionsResponse::default().with_api_keys(vec![
            ApiVersion::default()
                .with_api_key(ApiKey::OffsetFetch as i16)
                .with_min_version(1)
                .with_max_version(10),
        ]);
        assert_eq!(
            ApiVersions::from_response(&newer).max_version(ApiKey::OffsetFetch),
            Some(flumen_protocol::messages::OffsetFetchRequest::VERSIONS.max)
        );
        // kafka-protocol starts Fetch at v4, the broker stops at v1: nothing in common.
        assert_eq!(v.max_version(ApiKey::Fetch), None);
        assert_eq!(v.max_version(ApiKey::ListOffsets), None);
        assert!(v.release_estimate().starts_with("Kafka 3.x or older"));
    }

    #[test]
    fn finalized_features_are_read_only_with_an_epoch() {
        use flumen_protocol::messages::api_versions_response::FinalizedFeatureKey;
        let features = vec![
            FinalizedFeatureKey::default()
                .with_name(StrBytes::from_static_str("transaction.version"))
                .with_min_version_level(0)
                .with_max_version_level(2),
            FinalizedFeatureKey::default()
                .with_name(StrBytes::from_static_str("metadata.version"))
                .with_max_version_level(27),
        ];
        let known = ApiVersions::from_response(
            &ApiVersionsResponse::default()
                .with_finalized_features_epoch(12)
                .with_finalized_features(features.clone()),
        );
        assert_eq!(known.finalized_feature("transaction.version"), Some(2));
        assert_eq!(known.finalized_feature("metadata.version"), Some(27));
        assert_eq!(known.finalized_feature("group.version"), None);
        // Epoch -1: the broker has not learnt the features yet; the list means nothing.
        let unknown = ApiVersions::from_response(
            &ApiVersionsResponse::default()
                .with_finalized_features_epoch(-1)
                .with_finalized_features(features),
        );
        assert_eq!(unknown.finalized_feature("transaction.version"), None);
    }

    #[test]
    fn release_estimate_follows_the_oldest_fetch_version() {
        let fetch_from = |min: i16| {
            ApiVersions::from_response(&ApiVersionsResponse::default().with_api_keys(vec![
                ApiVersion::default()
                    .with_api_key(ApiKey::Fetch as i16)
                    .with_min_version(min)
                    .with_max_version(17),
            ]))
        };
        assert!(
            fetch_from(0)
                .release_estimate()
                .starts_with("Kafka 3.x or older")
        );
        assert!(
            fetch_from(4)
                .release_estimate()
                .starts_with("Kafka 4.0 or newer")
        );
        assert!(
            ApiVersions::default()
                .release_estimate()
                .contains("unknown release")
        );
    }
}
