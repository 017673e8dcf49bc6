//! A minimal blocking Kafka client for the CLI: one connection, one request at a time, the
//! same `kafka-protocol` codecs the broker uses, each API at the one version in [`VERSIONS`].
//! Talks to any Kafka-protocol broker, and trusts none: a response is decoded only after the
//! allocation guard ([`sluice_protocol::guard::check_response`]) has bounded what decoding it
//! may allocate.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use sluice_protocol::guard::check_response;

/// The largest response the CLI accepts; anything larger is a broken or hostile server.
const RESPONSE_MAX_BYTES: usize = 64 << 20;
/// The most that decoding one response may reserve for arrays and tagged fields, on top of
/// the response itself. A legitimate response needs a few times its own size; a metadata
/// response for a million partitions fits.
const RESPONSE_DECODE_BUDGET_BYTES: usize = 256 << 20;
/// How long a request may wait for its response, unless the caller says otherwise.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Every API the CLI calls and the one version it calls it at. The guard must have a
/// response schema for each (a test checks).
const VERSIONS: &[(ApiKey, i16)] = &[
    (ApiKey::Metadata, 12),
    (ApiKey::ListOffsets, 6),
    (ApiKey::DescribeConfigs, 4),
    (ApiKey::CreateTopics, 5),
    (ApiKey::DeleteTopics, 4),
    (ApiKey::IncrementalAlterConfigs, 1),
    (ApiKey::ListGroups, 4),
    (ApiKey::DescribeGroups, 5),
    (ApiKey::OffsetFetch, 7),
    (ApiKey::OffsetCommit, 8),
    (ApiKey::Produce, 9),
    (ApiKey::Fetch, 12),
    (ApiKey::FindCoordinator, 3),
    (ApiKey::JoinGroup, 7),
    (ApiKey::SyncGroup, 5),
    (ApiKey::Heartbeat, 4),
    (ApiKey::LeaveGroup, 4),
    (ApiKey::DescribeQuorum, 1),
    (ApiKey::AlterPartitionReassignments, 0),
    (ApiKey::ListPartitionReassignments, 0),
    (ApiKey::ElectLeaders, 1),
];

fn version(api: ApiKey) -> Option<i16> {
    VERSIONS.iter().find(|(a, _)| *a == api).map(|&(_, v)| v)
}

pub struct Client {
    stream: TcpStream,
    correlation_id: i32,
}

impl Client {
    pub fn connect(address: &str) -> Result<Self, String> {
        let stream =
            TcpStream::connect(address).map_err(|e| format!("cannot connect to {address}: {e}"))?;
        stream.set_read_timeout(Some(TIMEOUT)).ok();
        stream.set_write_timeout(Some(TIMEOUT)).ok();
        Ok(Self {
            stream,
            correlation_id: 0,
        })
    }

    /// Sends `request` as `api` and decodes the response.
    pub fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        api: ApiKey,
        request: &Req,
    ) -> Result<Resp, String> {
        let version = self.send(api, request)?;
        self.receive(api, version)
    }

    /// [`Client::call`] for a request the broker may hold longer than [`TIMEOUT`] (a
    /// JoinGroup waits for the whole group to rejoin).
    pub fn call_within<Req: Encodable, Resp: Decodable>(
        &mut self,
        api: ApiKey,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, String> {
        self.stream.set_read_timeout(Some(timeout)).ok();
        let result = self.call(api, request);
        self.stream.set_read_timeout(Some(TIMEOUT)).ok();
        result
    }

    /// Sends `request` as `api` without waiting for a response: for the one request a broker
    /// does not answer, a produce with acks=0. Returns the version sent.
    pub fn send<Req: Encodable>(&mut self, api: ApiKey, request: &Req) -> Result<i16, String> {
        let version = version(api).ok_or_else(|| format!("the CLI does not speak {api:?}"))?;
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("sluice-cli")));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, api.request_header_version(version))
            .map_err(|e| e.to_string())?;
        request
            .encode(&mut body, version)
            .map_err(|e| e.to_string())?;
        let size = i32::try_from(body.len())
            .map_err(|_| format!("{api:?} request of {} bytes is too large", body.len()))?;
        let mut frame = size.to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        self.stream
            .write_all(&frame)
            .map_err(|e| format!("send {api:?}: {e}"))?;
        Ok(version)
    }

    fn receive<Resp: Decodable>(&mut self, api: ApiKey, version: i16) -> Result<Resp, String> {
        let mut size = [0u8; 4];
        self.stream
            .read_exact(&mut size)
            .map_err(|e| format!("read {api:?} response: {e}"))?;
        let size = i32::from_be_bytes(size);
        if size < 0 || size as usize > RESPONSE_MAX_BYTES {
            return Err(format!("{api:?} response of {size} bytes refused"));
        }
        let mut buf = vec![0u8; size as usize];
        self.stream
            .read_exact(&mut buf)
            .map_err(|e| format!("read {api:?} response: {e}"))?;
        check_response(api, version, &buf, RESPONSE_DECODE_BUDGET_BYTES)
            .map_err(|e| format!("{api:?} response refused: {e}"))?;
        let mut buf = Bytes::from(buf);
        let header = ResponseHeader::decode(&mut buf, api.response_header_version(version))
            .map_err(|e| format!("{api:?} response header: {e}"))?;
        if header.correlation_id != self.correlation_id {
            return Err(format!("{api:?}: response to another request"));
        }
        Resp::decode(&mut buf, version).map_err(|e| format!("{api:?} response: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_has_a_response_schema_for_every_version_the_cli_speaks() {
        for &(api, v) in VERSIONS {
            let (lo, hi) = sluice_protocol::guard::response_versions(api)
                .unwrap_or_else(|| panic!("no response schema for {api:?}"));
            assert!((lo..=hi).contains(&v), "{api:?} v{v} outside {lo}..={hi}");
        }
    }
}
