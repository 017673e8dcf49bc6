//! The APIs and versions Sluice implements. ApiVersions advertises exactly this table; a request
//! outside it is answered with an error, never decoded.

use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::Message;

macro_rules! versions {
    ($(($api:ident, $request:ident, $min:literal, $max:literal, $($_rest:tt)*))*) => {
        /// `(api, min_version, max_version)` for every API the broker implements and tests.
        pub const SUPPORTED_APIS: &[(ApiKey, i16, i16)] = &[$((ApiKey::$api, $min, $max),)*];

        /// The versions the codec can decode for one of our APIs, taken from the request type
        /// itself (`ApiKey::valid_versions` can claim more: 0..=6 for InitProducerId, whose
        /// request type decodes 0..=5).
        pub fn codec_versions(api: ApiKey) -> Option<(i16, i16)> {
            let range = match api {
                $(ApiKey::$api => kafka_protocol::messages::$request::VERSIONS,)*
                _ => return None,
            };
            Some((range.min, range.max))
        }
    };
}
crate::for_each_api!(versions);

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

    /// ApiVersions advertises exactly the table, each API once.
    #[test]
    fn api_versions_advertises_exactly_the_table() {
        let advertised: Vec<(i16, i16, i16)> = crate::api_versions_response(0)
            .api_keys
            .iter()
            .map(|k| (k.api_key, k.min_version, k.max_version))
            .collect();
        let table: Vec<(i16, i16, i16)> = SUPPORTED_APIS
            .iter()
            .map(|&(api, lo, hi)| (api as i16, lo, hi))
            .collect();
        assert_eq!(advertised, table);
        let mut keys: Vec<i16> = table.iter().map(|k| k.0).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), table.len(), "an API is in the table twice");
    }

    /// Every advertised range lies within what the codec crate can decode and the guard has a
    /// schema for; otherwise a client could pick a version we cannot parse safely.
    #[test]
    fn advertised_versions_are_decodable_and_guarded() {
        for &(api, lo, hi) in SUPPORTED_APIS {
            let (min, max) = codec_versions(api).expect("a codec range");
            // Versions below the codec's are rewritten into one it decodes (`legacy`).
            let lo = crate::legacy::codec_version(api, lo);
            assert!(
                lo >= min && hi <= max,
                "{api:?} {lo}..={hi} vs {min}..={max}"
            );
            assert!(crate::guard::has_schema(api), "{api:?} has no guard schema");
        }
    }
}
