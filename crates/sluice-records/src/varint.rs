//! Zig-zag variable-length integers as used inside v2 records.

use crate::BatchError;

/// Reads a zig-zag varint of at most `max_bytes` bytes from the front of `buf`.
fn read_zigzag(buf: &mut &[u8], max_bytes: usize) -> Result<i64, BatchError> {
    let mut raw: u64 = 0;
    for i in 0..max_bytes {
        let Some((&byte, rest)) = buf.split_first() else {
            return Err(BatchError::InvalidRecord("record ends inside a varint"));
        };
        *buf = rest;
        raw |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64));
        }
    }
    Err(BatchError::InvalidRecord("varint too long"))
}

pub(crate) fn read_varint(buf: &mut &[u8]) -> Result<i32, BatchError> {
    let value = read_zigzag(buf, 5)?;
    i32::try_from(value).map_err(|_| BatchError::InvalidRecord("varint out of range"))
}

pub(crate) fn read_varlong(buf: &mut &[u8]) -> Result<i64, BatchError> {
    read_zigzag(buf, 10)
}

pub(crate) fn write_varlong(out: &mut Vec<u8>, value: i64) {
    let mut raw = ((value << 1) ^ (value >> 63)) as u64;
    while raw >= 0x80 {
        out.push((raw as u8) | 0x80);
        raw >>= 7;
    }
    out.push(raw as u8);
}

pub(crate) fn write_varint(out: &mut Vec<u8>, value: i32) {
    write_varlong(out, i64::from(value));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn varlong_round_trips(value: i64) {
            let mut out = Vec::new();
            write_varlong(&mut out, value);
            let mut slice = out.as_slice();
            prop_assert_eq!(read_varlong(&mut slice).unwrap(), value);
            prop_assert!(slice.is_empty());
        }

        #[test]
        fn varint_rejects_values_outside_i32(value in (i64::from(i32::MAX) + 1)..i64::MAX) {
            let mut out = Vec::new();
            write_varlong(&mut out, value);
            prop_assert!(read_varint(&mut out.as_slice()).is_err());
        }
    }

    #[test]
    fn unterminated_varint_is_an_error_not_a_panic() {
        let bytes = [0xffu8; 12];
        assert!(read_varlong(&mut &bytes[..]).is_err());
        assert!(read_varint(&mut &bytes[..2]).is_err());
    }
}
