//! Decompression of batch bodies, bounded by a caller-given output limit.
//!
//! Only the paths that must see records decompress: tooling (ListOffsets by timestamp, the
//! admin message browser), the cleaner, recompression into a topic's `compression.type`, and
//! conversion to and from the old message formats. Produce in the client's own codec and fetch
//! of v2 batches move compressed bytes untouched.

use std::io::Read;

use crate::{BatchError, Compression};

/// The xerial snappy-java stream magic some clients frame snappy data with.
const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_SIZE: usize = 16;

pub(crate) fn decompress(
    codec: Compression,
    body: &[u8],
    limit: usize,
) -> Result<Vec<u8>, BatchError> {
    let corrupt = |_| BatchError::Corrupt("compressed body does not decode");
    match codec {
        Compression::None => Ok(body.to_vec()),
        Compression::Gzip => read_bounded(flate2::read::MultiGzDecoder::new(body), limit),
        Compression::Lz4 => read_bounded(lz4_flex::frame::FrameDecoder::new(body), limit),
        Compression::Zstd => {
            let decoder = zstd::stream::read::Decoder::with_buffer(body).map_err(corrupt)?;
            read_bounded(decoder, limit)
        }
        Compression::Snappy => {
            if body.starts_with(XERIAL_MAGIC) && body.len() >= XERIAL_HEADER_SIZE {
                let mut rest = &body[XERIAL_HEADER_SIZE..];
                let mut out = Vec::new();
                while !rest.is_empty() {
                    if rest.len() < 4 {
                        return Err(BatchError::Corrupt("xerial snappy block header truncated"));
                    }
                    let len = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
                    let block = rest
                        .get(4..4 + len)
                        .ok_or(BatchError::Corrupt("xerial snappy block truncated"))?;
                    snappy_raw(block, limit.saturating_sub(out.len()), &mut out)?;
                    rest = &rest[4 + len..];
                }
                Ok(out)
            } else {
                let mut out = Vec::new();
                snappy_raw(body, limit, &mut out)?;
                Ok(out)
            }
        }
    }
}

fn snappy_raw(block: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<(), BatchError> {
    let len = snap::raw::decompress_len(block)
        .map_err(|_| BatchError::Corrupt("snappy block does not decode"))?;
    if len > limit {
        return Err(BatchError::DecompressedTooLarge(limit));
    }
    let start = out.len();
    out.resize(start + len, 0);
    snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(|_| BatchError::Corrupt("snappy block does not decode"))?;
    Ok(())
}

fn read_bounded(reader: impl Read, limit: usize) -> Result<Vec<u8>, BatchError> {
    let mut out = Vec::new();
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| BatchError::Corrupt("compressed body does not decode"))?;
    if out.len() > limit {
        return Err(BatchError::DecompressedTooLarge(limit));
    }
    Ok(out)
}

/// The block size snappy-java's stream framing uses; Kafka's Java clients read that framing.
const XERIAL_BLOCK_SIZE: usize = 32 << 10;

/// Compresses a batch body (or an old-format message set) with `codec`, in the framing Kafka's
/// Java clients write and every client reads: gzip, snappy in snappy-java's stream framing,
/// an LZ4 frame, a zstd frame.
pub fn compress(codec: Compression, body: &[u8]) -> Vec<u8> {
    use std::io::Write;
    match codec {
        Compression::None => body.to_vec(),
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(body).expect("writing to memory");
            enc.finish().expect("writing to memory")
        }
        Compression::Snappy => {
            let mut out = Vec::with_capacity(XERIAL_HEADER_SIZE + body.len() / 2);
            out.extend_from_slice(XERIAL_MAGIC);
            out.extend_from_slice(&1i32.to_be_bytes()); // version
            out.extend_from_slice(&1i32.to_be_bytes()); // compatible version
            let mut encoder = snap::raw::Encoder::new();
            for block in body.chunks(XERIAL_BLOCK_SIZE) {
                let compressed = encoder
                    .compress_vec(block)
                    .expect("a 32 KiB block is within snappy's limits");
                out.extend_from_slice(&(compressed.len() as u32).to_be_bytes());
                out.extend_from_slice(&compressed);
            }
            out
        }
        Compression::Lz4 => {
            let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::new());
            enc.write_all(body).expect("writing to memory");
            enc.finish().expect("writing to memory")
        }
        Compression::Zstd => zstd::bulk::compress(body, 3).expect("zstd compresses any input"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever is compressed with a codec decompresses back to itself.
        #[test]
        fn compress_then_decompress_is_the_identity(
            body in proptest::collection::vec(any::<u8>(), 0..100_000),
            codec in prop_oneof![
                Just(Compression::None), Just(Compression::Gzip), Just(Compression::Snappy),
                Just(Compression::Lz4), Just(Compression::Zstd),
            ],
        ) {
            let packed = compress(codec, &body);
            prop_assert_eq!(decompress(codec, &packed, body.len()).unwrap(), body);
        }
    }
}

/// The attribute bits of `codec`.
pub(crate) fn codec_bits(codec: Compression) -> i16 {
    match codec {
        Compression::None => 0,
        Compression::Gzip => 1,
        Compression::Snappy => 2,
        Compression::Lz4 => 3,
        Compression::Zstd => 4,
    }
}

/// Rewrites a v2 batch so that its records are compressed with `codec` (a topic's
/// `compression.type` other than `producer`, applied on produce as Kafka applies it). Every
/// header field but the codec bits, the length and the CRC is kept; the records themselves
/// are not re-encoded, only their compressed form changes.
pub fn recompress(
    batch: &[u8],
    codec: Compression,
    max_decompressed_bytes: usize,
) -> Result<Vec<u8>, BatchError> {
    let header = crate::BatchHeader::parse(batch)?;
    let body = batch
        .get(crate::BATCH_HEADER_SIZE..header.total_size())
        .ok_or(BatchError::Truncated {
            needed: header.total_size(),
            available: batch.len(),
        })?;
    let plain = match header.compression()? {
        Compression::None => body.to_vec(),
        from => decompress(from, body, max_decompressed_bytes)?,
    };
    let packed = compress(codec, &plain);
    let mut out = Vec::with_capacity(crate::BATCH_HEADER_SIZE + packed.len());
    out.extend_from_slice(&batch[..crate::BATCH_HEADER_SIZE]);
    out.extend_from_slice(&packed);
    let length = (out.len() - crate::LOG_OVERHEAD) as i32;
    out[crate::batch::BATCH_LENGTH_OFFSET..crate::batch::BATCH_LENGTH_OFFSET + 4]
        .copy_from_slice(&length.to_be_bytes());
    let attributes = (header.attributes & !crate::batch::COMPRESSION_MASK) | codec_bits(codec);
    let at = crate::batch::ATTRIBUTES_OFFSET;
    out[at..at + 2].copy_from_slice(&attributes.to_be_bytes());
    let crc = crc32c::crc32c(&out[at..]);
    let crc_at = crate::batch::CRC_OFFSET;
    out[crc_at..crc_at + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(out)
}

#[cfg(test)]
mod recompress_tests {
    use super::*;
    use crate::{BatchBuilder, BatchHeader, NewRecord};

    /// A batch recompressed into any codec validates, keeps its producer, sequence, offsets
    /// and timestamps, and holds the same records; recompressing back gives the original.
    #[test]
    fn recompressed_batches_hold_the_same_records() {
        let mut b = BatchBuilder::new(1_000);
        b.producer(7, 2, 40);
        for i in 0..50u8 {
            b.push(NewRecord {
                key: Some(vec![i]),
                value: Some(vec![i; 100]),
                headers: vec![("h".into(), Some(vec![i]))],
                timestamp_delta: i64::from(i),
            });
        }
        let original = b.build();
        let before = BatchHeader::validate(&original).unwrap();
        for codec in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let packed = recompress(&original, codec, 1 << 20).unwrap();
            let after = BatchHeader::validate(&packed).unwrap();
            assert_eq!(after.compression().unwrap(), codec);
            assert_eq!(
                (after.producer_id, after.producer_epoch, after.base_sequence),
                (
                    before.producer_id,
                    before.producer_epoch,
                    before.base_sequence
                )
            );
            assert_eq!(after.last_offset_delta, before.last_offset_delta);
            assert_eq!(after.max_timestamp, before.max_timestamp);
            assert_eq!(
                after.records(&packed, 1 << 20).unwrap(),
                before.records(&original, 1 << 20).unwrap()
            );
            let back = recompress(&packed, Compression::None, 1 << 20).unwrap();
            assert_eq!(back, original);
        }
    }
}
