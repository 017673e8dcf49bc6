//! Decompression of batch bodies, bounded by a caller-given output limit.
//!
//! Only tooling paths decompress (ListOffsets by timestamp, and later the cleaner); produce and
//! fetch move compressed bytes untouched.

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
