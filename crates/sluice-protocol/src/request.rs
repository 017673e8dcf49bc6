//! Request header parsing, guarded request decoding, response encoding.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::guard::{self, GuardError};
use crate::versions::{codec_versions, supported_versions};

/// api_key, api_version and correlation_id: the part of every header we must be able to read
/// to answer at all.
pub const REQUEST_HEADER_MIN_SIZE: usize = 8;

/// The request header, parsed by hand so that a bad body can still be answered under its
/// correlation id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeader {
    /// The raw key; [`RequestHeader::api`] maps it to a known API.
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
    pub client_id: Option<String>,
}

impl RequestHeader {
    pub fn api(&self) -> Option<ApiKey> {
        ApiKey::try_from(self.api_key).ok()
    }
}

/// Why a request could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("frame of {0} bytes is shorter than a request header")]
    ShortHeader(usize),
    #[error("malformed request header")]
    BadHeader,
    #[error("unknown api key {0}")]
    UnknownApi(i16),
    #[error("unsupported version {version} of {api:?}")]
    UnsupportedVersion { api: ApiKey, version: i16 },
    #[error("request refused by the allocation guard: {0}")]
    Guard(#[from] GuardError),
    #[error("request does not decode: {0}")]
    Codec(String),
}

fn read_uvarint(buf: &[u8], pos: &mut usize) -> Result<u32, DecodeError> {
    let mut value = 0u32;
    for i in 0..5 {
        let byte = *buf.get(*pos).ok_or(DecodeError::BadHeader)?;
        *pos += 1;
        value |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(DecodeError::BadHeader)
}

/// Splits a frame (without its size prefix) into the header and the body. For unknown API
/// keys only the fixed part is read and the body is whatever follows it.
pub fn parse_request_header(frame: &Bytes) -> Result<(RequestHeader, Bytes), DecodeError> {
    if frame.len() < REQUEST_HEADER_MIN_SIZE {
        return Err(DecodeError::ShortHeader(frame.len()));
    }
    let api_key = i16::from_be_bytes([frame[0], frame[1]]);
    let api_version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes(frame[4..8].try_into().expect("4 bytes"));
    let mut header = RequestHeader {
        api_key,
        api_version,
        correlation_id,
        client_id: None,
    };
    let Ok(api) = ApiKey::try_from(api_key) else {
        return Ok((header, frame.slice(REQUEST_HEADER_MIN_SIZE..)));
    };
    let mut pos = REQUEST_HEADER_MIN_SIZE;
    let header_version = api.request_header_version(api_version);
    if header_version >= 1 {
        let len_bytes = frame.get(pos..pos + 2).ok_or(DecodeError::BadHeader)?;
        let len = i16::from_be_bytes([len_bytes[0], len_bytes[1]]);
        pos += 2;
        if len >= 0 {
            let end = pos + len as usize;
            let id = frame.get(pos..end).ok_or(DecodeError::BadHeader)?;
            header.client_id = Some(String::from_utf8_lossy(id).into_owned());
            pos = end;
        } else if len != -1 {
            return Err(DecodeError::BadHeader);
        }
    }
    if header_version >= 2 {
        let count = read_uvarint(frame, &mut pos)?;
        for _ in 0..count {
            read_uvarint(frame, &mut pos)?;
            let size = read_uvarint(frame, &mut pos)? as usize;
            if frame.len() - pos < size {
                return Err(DecodeError::BadHeader);
            }
            pos += size;
        }
    }
    Ok((header, frame.slice(pos..)))
}

macro_rules! request {
    ($(($api:ident, $request:ident, $($_rest:tt)*))*) => {
        /// A decoded request of one of the APIs in [`crate::SUPPORTED_APIS`].
        #[derive(Debug)]
        pub enum Request {
            $($api(kafka_protocol::messages::$request),)*
        }

        impl Request {
            /// The API this request belongs to.
            pub fn api(&self) -> ApiKey {
                match self {
                    $(Self::$api(_) => ApiKey::$api,)*
                }
            }

            /// This request's [`crate::ErrorResponse`] for `error_code`, encoded at `version`
            /// with its size prefix and header (the broker builds its own, to count errors).
            pub fn encode_error_response(
                &self,
                version: i16,
                correlation_id: i32,
                error_code: i16,
            ) -> Result<Bytes, String> {
                use crate::ErrorResponse;
                match self {
                    $(Self::$api(r) => encode_response(
                        ApiKey::$api,
                        version,
                        correlation_id,
                        &r.error_response(version, error_code),
                    ),)*
                }
            }

            /// Decodes a body the guard has accepted as `api` at (codec) `version`.
            fn decode_checked(api: ApiKey, version: i16, body: Bytes) -> Result<Self, DecodeError> {
                Ok(match api {
                    $(ApiKey::$api => Self::$api(decode_as(body, version)?),)*
                    other => {
                        return Err(DecodeError::UnsupportedVersion {
                            api: other,
                            version,
                        })
                    }
                })
            }
        }

        // Every API in the table can be answered with an error (Kafka's `getErrorResponse`).
        const _: fn() = || {
            fn answerable<T: crate::ErrorResponse>() {}
            $(answerable::<kafka_protocol::messages::$request>();)*
        };
    };
}
crate::for_each_api!(request);

fn decode_as<T: Decodable>(mut body: Bytes, version: i16) -> Result<T, DecodeError> {
    T::decode(&mut body, version).map_err(|e| DecodeError::Codec(e.to_string()))
}

impl Request {
    /// Decodes a body after checking the version against the supported table and running the
    /// allocation guard with `budget_bytes` for decoded arrays.
    pub fn decode(
        header: &RequestHeader,
        body: Bytes,
        budget_bytes: usize,
    ) -> Result<Self, DecodeError> {
        Self::decode_within(header, body, budget_bytes, supported_versions)
    }

    /// Decodes a request at a version we do not support but the codec knows, so that it can
    /// be answered with UNSUPPORTED_VERSION instead of a closed connection. The guard runs
    /// exactly as for supported versions.
    pub fn decode_unsupported(
        header: &RequestHeader,
        body: Bytes,
        budget_bytes: usize,
    ) -> Result<Self, DecodeError> {
        Self::decode_within(header, body, budget_bytes, codec_versions)
    }

    /// Decodes if the header's version lies in the range `versions` gives for its API.
    fn decode_within(
        header: &RequestHeader,
        body: Bytes,
        budget_bytes: usize,
        versions: fn(ApiKey) -> Option<(i16, i16)>,
    ) -> Result<Self, DecodeError> {
        let api = header
            .api()
            .ok_or(DecodeError::UnknownApi(header.api_key))?;
        let version = header.api_version;
        match versions(api) {
            Some((lo, hi)) if (lo..=hi).contains(&version) => {}
            _ => return Err(DecodeError::UnsupportedVersion { api, version }),
        }
        Self::decode_guarded(api, version, body, budget_bytes)
    }

    fn decode_guarded(
        api: ApiKey,
        version: i16,
        body: Bytes,
        budget_bytes: usize,
    ) -> Result<Self, DecodeError> {
        // Versions Kafka 4 dropped are rewritten into the nearest one the codec decodes.
        let body = crate::legacy::upgrade_request(api, version, body)?;
        let version = crate::legacy::codec_version(api, version);
        guard::check_request_body(api, version, &body, budget_bytes)?;
        Self::decode_checked(api, version, body)
    }
}

/// Encodes a response with its size prefix and response header.
pub fn encode_response<R: Encodable>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &R,
) -> Result<Bytes, String> {
    let wire_version = version;
    // An old version is encoded at the one the codec knows, then rewritten (`legacy`).
    let version = crate::legacy::codec_version(api, version);
    let header_version = api.response_header_version(version);
    let body_size = body.compute_size(version).map_err(|e| e.to_string())?;
    let header_size = if header_version >= 1 { 5 } else { 4 };
    let total = header_size + body_size;
    let size = i32::try_from(total).map_err(|_| format!("response of {total} bytes"))?;
    let mut out = BytesMut::with_capacity(4 + total);
    out.put_i32(size);
    out.put_i32(correlation_id);
    if header_version >= 1 {
        out.put_u8(0); // no tagged fields
    }
    body.encode(&mut out, version).map_err(|e| e.to_string())?;
    crate::legacy::downgrade_response(api, wire_version, out.freeze())
}
