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

/// The most bytes one frame of the quorum's log file or one quorum message may hold: a
/// bound checked before anything is allocated for what a file or a peer says is coming.
pub const FRAME_BYTES_MAX: usize = 64 << 20;

/// The most bytes a snapshot of the metadata image may take (its file and its transfer).
pub const SNAPSHOT_BYTES_MAX: usize = 1 << 30;

/// The frame of every quorum file:
///
/// ```text
/// u32 payload length | u32 CRC-32C of the payload | payload
/// ```
pub fn put_frame(out: &mut Vec<u8>, payload: &[u8], max: usize) -> std::io::Result<()> {
    if payload.len() > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "a quorum frame of {} bytes, over its bound of {max}",
                payload.len()
            ),
        ));
    }
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_be_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// What the start of a buffer holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// An intact frame's payload, and the bytes after it.
    Whole(&'a [u8], &'a [u8]),
    /// The end of what was written: a frame cut short, a last frame whose checksum fails, or
    /// zeros (what a power cut leaves of a write that was never synced).
    Torn,
    /// A frame whose checksum fails with more bytes after it, or an impossible length: the
    /// file is damaged, not just cut.
    Damaged,
}

/// Reads the frame at the start of `buf` (not empty), whose payload may be up to `max`.
pub fn take_frame(buf: &[u8], max: usize) -> Frame<'_> {
    if buf.iter().all(|&b| b == 0) {
        return Frame::Torn;
    }
    let Some(header) = buf.get(..8) else {
        return Frame::Torn;
    };
    let len = u32::from_be_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_be_bytes(header[4..8].try_into().expect("4 bytes"));
    if len > max {
        return Frame::Damaged;
    }
    let Some(payload) = buf.get(8..8 + len) else {
        return Frame::Torn;
    };
    let rest = &buf[8 + len..];
    match (crc32c::crc32c(payload) == crc, rest.is_empty()) {
        (true, _) => Frame::Whole(payload, rest),
        (false, true) => Frame::Torn,
        (false, false) => Frame::Damaged,
    }
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
    fn a_cut_frame_is_torn_and_a_bad_one_with_data_after_it_is_damaged() {
        let mut buf = Vec::new();
        put_frame(&mut buf, b"hello", 100).unwrap();
        let one = buf.len();
        put_frame(&mut buf, b"world", 100).unwrap();
        assert_eq!(take_frame(&buf, 100), Frame::Whole(b"hello", &buf[one..]));
        // Cut anywhere in the last frame, or its last byte changed: the end of the log.
        for cut in one + 1..buf.len() {
            assert_eq!(take_frame(&buf[one..cut], 100), Frame::Torn, "cut at {cut}");
        }
        let mut last = buf.clone();
        *last.last_mut().unwrap() ^= 1;
        assert_eq!(take_frame(&last[one..], 100), Frame::Torn);
        assert_eq!(take_frame(&[0; 20], 100), Frame::Torn);
        // A bad checksum with a frame after it, or a length past the bound: damage.
        let mut damaged = buf.clone();
        damaged[9] ^= 1;
        assert_eq!(take_frame(&damaged, 100), Frame::Damaged);
        assert_eq!(take_frame(&buf, 4), Frame::Damaged);
        assert!(put_frame(&mut Vec::new(), b"hello", 4).is_err());
    }
}
