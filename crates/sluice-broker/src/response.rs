//! What a handler answers with: encoded bytes and fetched records in write order, now or
//! later. A leaf module: handlers build these, and the connection pipeline (`server`) writes
//! them, without either importing the other's internals.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use sluice_partition::FileSlice;

/// One piece of a response, in write order.
pub(crate) enum OutChunk {
    /// Encoded bytes, already in memory.
    Bytes(Bytes),
    /// A partition's fetched records, counted for `topic` in the traffic metrics as they go.
    Records {
        records: FetchedRecords,
        topic: Arc<str>,
    },
}

/// Records a fetch returns: in memory, or still in their segment file, sent from there in
/// pieces so that a response never holds its records in memory.
#[derive(Debug, Clone)]
pub(crate) enum FetchedRecords {
    /// No records (a partition with an error, or nothing new): an empty, not null, set.
    Empty,
    File(FileSlice),
    /// Records converted for a client that reads the old message formats, and how many.
    Converted {
        bytes: Bytes,
        records: u64,
    },
}

impl FetchedRecords {
    pub fn len(&self) -> usize {
        match self {
            FetchedRecords::Empty => 0,
            FetchedRecords::File(slice) => slice.len(),
            FetchedRecords::Converted { bytes, .. } => bytes.len(),
        }
    }
}

/// An encoded response, with the non-zero error codes it carries (for metrics).
pub(crate) struct Answer {
    pub chunks: Vec<OutChunk>,
    pub errors: Vec<i16>,
}

impl Answer {
    /// Bytes the answer holds in memory until it is written.
    pub(crate) fn held_bytes(&self) -> usize {
        self.chunks
            .iter()
            .map(|c| match c {
                OutChunk::Bytes(b) => b.len(),
                OutChunk::Records { .. } => 0,
            })
            .sum()
    }
}

/// What a response future yields: `Ok(None)` for requests that get no response (acks=0),
/// `Err` when the connection must close instead (the string says why).
pub(crate) type ResponseResult = Result<Option<Answer>, String>;

/// A response still being computed.
pub(crate) type ResponseFuture = Pin<Box<dyn Future<Output = ResponseResult> + Send>>;

/// Work a request must finish before its connection reads the next request, because it
/// acts on state in request order (a transactional produce verified with a remote
/// coordinator); it yields the response, or closes the connection, as a handler would.
pub(crate) type Step = Pin<Box<dyn Future<Output = Result<Option<Response>, String>> + Send>>;

/// A handler's response: already encoded, still to come, or after an ordered step.
pub(crate) enum Response {
    Now(ResponseResult),
    Later(ResponseFuture),
    First(Step),
}
