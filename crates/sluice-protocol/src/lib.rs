//! The Kafka wire format as Sluice speaks it: request framing, the request header, the
//! allocation guard in front of `kafka-protocol` (for requests the broker reads and responses
//! the CLI reads), the table of the APIs we implement (`apis.rs`, [`for_each_api!`]) and
//! everything generated from it, each request's error response ([`ErrorResponse`]), and
//! Kafka's names for error codes.
//!
//! ```text
//! frame:           size: i32 (bytes that follow) | header | body
//! request header:  api_key: i16 | api_version: i16 | correlation_id: i32
//!                  | client_id: nullable string (i16 length)
//!                  | tagged fields (header v2, i.e. flexible request versions only)
//! response:        size: i32 | correlation_id: i32 | tagged fields (header v1) | body
//! ```
//!
//! This crate knows nothing of storage. It turns bytes into typed requests (only after
//! [`guard::check_request_body`] has bounded what decoding may allocate) and typed responses
//! into bytes. Clients of untrusted brokers run [`guard::check_response`] before decoding.

mod apis;
mod error_name;
mod error_response;
pub mod fetch_response;
pub mod guard;
pub mod legacy;
mod request;
mod versions;

pub use error_name::error_name;
pub use error_response::{api_versions_response, ErrorResponse};
pub use kafka_protocol;
pub use request::{
    encode_response, parse_request_header, DecodeError, Request, RequestHeader,
    REQUEST_HEADER_MIN_SIZE,
};
pub use versions::{codec_versions, supported_versions, SUPPORTED_APIS};
