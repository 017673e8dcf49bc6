//! The types openraft is instantiated with, and the frame every quorum file is made of.

use std::io::Cursor;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

openraft::declare_raft_types!(
    /// The metadata quorum's Raft: entries carry metadata record batches.
    pub QuorumTypes:
        D = MetadataBatch,
        R = (),
        NodeId = u64,
        Node = openraft::BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type NodeId = u64;
pub type LogId = openraft::LogId<NodeId>;
pub type Entry = openraft::Entry<QuorumTypes>;
pub type Vote = openraft::Vote<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type Raft = openraft::Raft<QuorumTypes>;
pub type Membership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;

/// One metadata log entry's records, as `sluice_metadata::records::encode_batch` wrote them:
/// the controller's decision for one request, applied as a whole. Serialised (in Raft
/// messages and the log file's JSON) as a hex string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetadataBatch(pub Vec<u8>);

impl Serialize for MetadataBatch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(self.0.len() * 2);
        for b in &self.0 {
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
        s.serialize_str(&out)
    }
}

impl<'de> Deserialize<'de> for MetadataBatch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let digit = |c: u8| match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            _ => Err(serde::de::Error::custom(
                "a metadata batch is lower-case hex",
            )),
        };
        let bytes = text.as_bytes();
        if bytes.len() % 2 != 0 {
            return Err(serde::de::Error::custom(
                "a metadata batch has an odd hex length",
            ));
        }
        bytes
            .chunks_exact(2)
            .map(|pair| Ok(digit(pair[0])? << 4 | digit(pair[1])?))
            .collect::<Result<_, _>>()
            .map(MetadataBatch)
    }
}

/// The most bytes one frame of a quorum file or one quorum message may hold: a bound checked
/// before anything is allocated for what a file or a peer says is coming.
pub const FRAME_BYTES_MAX: usize = 64 << 20;

/// The frame of every quorum file:
///
/// ```text
/// u32 payload length | u32 CRC-32C of the payload | payload
/// ```
pub fn put_frame(out: &mut Vec<u8>, payload: &[u8]) {
    assert!(
        payload.len() <= FRAME_BYTES_MAX,
        "a quorum frame over its bound"
    );
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_be_bytes());
    out.extend_from_slice(payload);
}

/// The frame at the start of `buf` and the bytes after it; `None` where `buf` holds no whole,
/// intact frame (a torn or damaged tail).
pub fn take_frame(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let header = buf.get(..8)?;
    let len = u32::from_be_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_be_bytes(header[4..8].try_into().expect("4 bytes"));
    if len > FRAME_BYTES_MAX {
        return None;
    }
    let payload = buf.get(8..8 + len)?;
    (crc32c::crc32c(payload) == crc).then(|| (payload, &buf[8 + len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip_through_hex_and_bad_hex_is_an_error() {
        let batch = MetadataBatch(vec![0, 1, 0xab, 0xff]);
        let json = serde_json::to_string(&batch).unwrap();
        assert_eq!(json, "\"0001abff\"");
        assert_eq!(serde_json::from_str::<MetadataBatch>(&json).unwrap(), batch);
        assert!(serde_json::from_str::<MetadataBatch>("\"0g\"").is_err());
        assert!(serde_json::from_str::<MetadataBatch>("\"abc\"").is_err());
    }

    #[test]
    fn a_damaged_or_torn_frame_is_not_taken() {
        let mut buf = Vec::new();
        put_frame(&mut buf, b"hello");
        let (payload, rest) = take_frame(&buf).unwrap();
        assert_eq!((payload, rest), (&b"hello"[..], &b""[..]));
        assert!(take_frame(&buf[..buf.len() - 1]).is_none());
        let mut damaged = buf.clone();
        damaged[9] ^= 1;
        assert!(take_frame(&damaged).is_none());
        let mut huge = buf;
        huge[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(take_frame(&huge).is_none());
    }
}
