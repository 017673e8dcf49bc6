//! Kafka error codes by Kafka's own names, as the protocol guide and Kafka's tools print them.

use kafka_protocol::ResponseError;

/// The name of a Kafka error code in Kafka's SCREAMING_SNAKE form
/// (`UNKNOWN_TOPIC_OR_PARTITION`); `NONE` for 0 and `ERROR_<code>` for a code the codec does
/// not know.
pub fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        None => "NONE".to_string(),
        Some(ResponseError::Unknown(code)) => format!("ERROR_{code}"),
        // Display is the variant's name, Kafka's name in CamelCase.
        Some(known) => screaming_snake(&known.to_string()),
    }
}

fn screaming_snake(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_kafkas_own() {
        // From the error table of Kafka's protocol guide, the odd ones included.
        for (code, name) in [
            (-1, "UNKNOWN_SERVER_ERROR"),
            (0, "NONE"),
            (3, "UNKNOWN_TOPIC_OR_PARTITION"),
            (10, "MESSAGE_TOO_LARGE"),
            (17, "INVALID_TOPIC_EXCEPTION"),
            (20, "NOT_ENOUGH_REPLICAS_AFTER_APPEND"),
            (56, "KAFKA_STORAGE_ERROR"),
            (106, "FETCH_SESSION_TOPIC_ID_ERROR"),
        ] {
            assert_eq!(error_name(code), name);
        }
    }

    #[test]
    fn unknown_codes_are_named_by_number() {
        assert_eq!(error_name(i16::MAX), format!("ERROR_{}", i16::MAX));
        assert_eq!(error_name(-7), "ERROR_-7");
    }

    #[test]
    fn every_known_name_is_upper_snake_case() {
        for code in -1..=200 {
            let name = error_name(code);
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_' || c == '-'),
                "{code}: {name}"
            );
        }
    }
}
