//! A connection to another broker's Kafka listener, for the requests brokers send each
//! other with Kafka's own messages: replica fetches, transaction markers (WriteTxnMarkers)
//! and verifications of transactional writes (AddPartitionsToTxn v4, verify only).
//!
//! One request at a time per connection. Every response is bounded by the allocation guard
//! before it is decoded: a peer is trusted no more than a client.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::BrokerState;

/// The largest response frame accepted, and what decoding it may allocate besides.
const RESPONSE_MAX_BYTES: usize = 64 << 20;
const RESPONSE_DECODE_BUDGET_BYTES: usize = 64 << 20;
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to one broker.
pub(crate) struct PeerConnection {
    pub(crate) addr: String,
    stream: TcpStream,
    correlation_id: i32,
    client_id: String,
}

impl PeerConnection {
    pub(crate) async fn open(addr: &str, client_id: String) -> Result<Self, String> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| format!("connecting to {addr} timed out"))?
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        Ok(Self {
            addr: addr.to_string(),
            stream,
            correlation_id: 0,
            client_id,
        })
    }

    /// Sends `request` as `api` at `version` and reads its response, all within `timeout`.
    /// A failed call leaves the connection unusable: drop it.
    pub(crate) async fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, String> {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_string(self.client_id.clone())));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, api.request_header_version(version))
            .map_err(|e| e.to_string())?;
        request
            .encode(&mut body, version)
            .map_err(|e| e.to_string())?;
        let mut frame = (body.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        let addr = self.addr.clone();
        let exchange = async {
            self.stream
                .write_all(&frame)
                .await
                .map_err(|e| format!("send to {addr}: {e}"))?;
            let mut size = [0u8; 4];
            self.stream
                .read_exact(&mut size)
                .await
                .map_err(|e| format!("read from {addr}: {e}"))?;
            let size = i32::from_be_bytes(size);
            if size < 0 || size as usize > RESPONSE_MAX_BYTES {
                return Err(format!("a {api:?} response of {size} bytes from {addr}"));
            }
            let mut buf = vec![0u8; size as usize];
            self.stream
                .read_exact(&mut buf)
                .await
                .map_err(|e| format!("read from {addr}: {e}"))?;
            Ok(buf)
        };
        let buf = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| format!("{api:?} to {} timed out", self.addr))??;
        sluice_protocol::guard::check_response(api, version, &buf, RESPONSE_DECODE_BUDGET_BYTES)
            .map_err(|e| format!("{api:?} response from {} refused: {e}", self.addr))?;
        let mut buf = Bytes::from(buf);
        let header = ResponseHeader::decode(&mut buf, api.response_header_version(version))
            .map_err(|e| e.to_string())?;
        if header.correlation_id != self.correlation_id {
            return Err(format!("{} answered another request", self.addr));
        }
        Resp::decode(&mut buf, version).map_err(|e| e.to_string())
    }
}

/// A broker's Kafka listener, from the metadata.
pub(crate) fn broker_address(state: &BrokerState, broker: i32) -> Option<String> {
    state.cluster.view.read(|image| {
        image
            .broker(broker)
            .and_then(|b| b.endpoints.first())
            .map(|e| crate::config::address(&e.host, e.port))
    })
}

/// Sends one request to `broker` on a fresh connection (for rare requests: markers,
/// verifications), within `timeout`.
pub(crate) async fn call_once<Req: Encodable, Resp: Decodable>(
    state: &BrokerState,
    broker: i32,
    api: ApiKey,
    version: i16,
    request: &Req,
    timeout: Duration,
) -> Result<Resp, String> {
    let addr = broker_address(state, broker).ok_or(format!("no address for broker {broker}"))?;
    let client_id = format!("sluice-broker-{}", state.config.node_id);
    let exchange = async {
        let mut conn = PeerConnection::open(&addr, client_id).await?;
        conn.call(api, version, request, timeout).await
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("{api:?} to broker {broker} timed out"))?
}
