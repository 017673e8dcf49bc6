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
