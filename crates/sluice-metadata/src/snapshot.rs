//! A snapshot of the metadata image: what lets the metadata log be compacted, and what a
//! node that fell behind (or a new one) loads before replaying the entries after it.
//!
//! ```text
//! 0   4  magic "SLMS"
//! 4   2  i16 format version = 1
//! 6   8  i64 last broker epoch
//! 14  4  u32 CRC-32C of the body
//! 18  .. body: a record batch (`records::encode_batch`) that rebuilds the image
//! ```
//!
//! Which log entry the snapshot covers is the Raft layer's to record beside it.

use bytes::{BufMut, Bytes, BytesMut};

use crate::image::{MetadataImage, ReplayError};
use crate::records::{decode_batch, encode_batch, BadRecord};

const MAGIC: &[u8; 4] = b"SLMS";
const FORMAT_VERSION: i16 = 1;
const HEADER_BYTES: usize = 18;

/// Why a snapshot could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotError {
    /// Not a Sluice metadata snapshot, or one of a format this build does not know.
    Format(&'static str),
    /// The body's checksum does not match: the file is damaged.
    Checksum {
        stored: u32,
        computed: u32,
    },
    Record(BadRecord),
    Replay(ReplayError),
}

impl std::fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Format(why) => write!(f, "not a metadata snapshot: {why}"),
            Self::Checksum { stored, computed } => write!(
                f,
                "metadata snapshot damaged: CRC-32C {computed:#010x}, stored {stored:#010x}"
            ),
            Self::Record(e) => write!(f, "metadata snapshot: {e}"),
            Self::Replay(e) => write!(f, "metadata snapshot: {e}"),
        }
    }
}

impl std::error::Error for SnapshotError {}

/// Encodes the image.
pub fn encode_snapshot(image: &MetadataImage) -> Bytes {
    let body = encode_batch(&image.to_records());
    let mut out = BytesMut::with_capacity(HEADER_BYTES + body.len());
    out.put_slice(MAGIC);
    out.put_i16(FORMAT_VERSION);
    out.put_i64(image.last_broker_epoch());
    out.put_u32(crc32c::crc32c(&body));
    out.put_slice(&body);
    out.freeze()
}

/// Loads an image from [`encode_snapshot`]'s bytes, checking the format and the checksum
/// before decoding anything.
pub fn decode_snapshot(bytes: &[u8]) -> Result<MetadataImage, SnapshotError> {
    if bytes.len() < HEADER_BYTES {
        return Err(SnapshotError::Format("shorter than its header"));
    }
    let (header, body) = bytes.split_at(HEADER_BYTES);
    if &header[..4] != MAGIC {
        return Err(SnapshotError::Format("wrong magic"));
    }
    if i16::from_be_bytes([header[4], header[5]]) != FORMAT_VERSION {
        return Err(SnapshotError::Format("unknown format version"));
    }
    let last_broker_epoch = i64::from_be_bytes(header[6..14].try_into().expect("8 bytes"));
    let stored = u32::from_be_bytes(header[14..18].try_into().expect("4 bytes"));
    let computed = crc32c::crc32c(body);
    if stored != computed {
        return Err(SnapshotError::Checksum { stored, computed });
    }
    let records = decode_batch(body).map_err(SnapshotError::Record)?;
    MetadataImage::from_records(&records, last_broker_epoch).map_err(SnapshotError::Replay)
}
