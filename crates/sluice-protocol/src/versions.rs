//! The APIs and versions Sluice implements. ApiVersions advertises exactly this table; a request
//! outside it is answered with an error, never decoded.

use kafka_protocol::messages::ApiKey;

/// `(api, min_version, max_version)` for every API the broker implements and tests.
pub const SUPPORTED_APIS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 6),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::InitProducerId, 0, 4),
];

/// The version range we support for `api`, if any.
pub fn supported_versions(api: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED_APIS
        .iter()
        .find(|(k, _, _)| *k == api)
        .map(|&(_, lo, hi)| (lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::Message;

    /// Every advertised range lies within what the codec crate can decode and the guard has a
    /// schema for; otherwise a client could pick a version we cannot parse safely.
    #[test]
    fn advertised_versions_are_decodable_and_guarded() {
        for &(api, lo, hi) in SUPPORTED_APIS {
            let codec = api.valid_versions();
            assert!(
                lo >= codec.min && hi <= codec.max,
                "{api:?} {lo}..={hi} vs {codec:?}"
            );
            assert!(crate::guard::has_schema(api), "{api:?} has no guard schema");
        }
        let _ = kafka_protocol::messages::ProduceRequest::VERSIONS;
    }
}
