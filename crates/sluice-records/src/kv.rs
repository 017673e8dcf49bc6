//! The primitives of Kafka's versioned key/value records: the non-flexible encoding Kafka's
//! generated message classes use for the keys and values of its internal topics
//! (`__consumer_offsets`, `__transaction_state`) and for the consumer protocol's
//! subscriptions and assignments. Each record starts with an i16 version; what follows is
//! built from these fields:
//!
//! ```text
//! i8 / i16 / i32 / i64   big-endian two's complement
//! string                 i16 length, then that many bytes of UTF-8; length -1 is null
//! bytes                  i32 length, then that many bytes; length -1 is null
//! array                  i32 count, then that many elements; count -1 is null
//! ```
//!
//! For example the string "ab" is `00 02 61 62`, a null string `ff ff`, and an array of the
//! two i32s 3 and 5 is `00 00 00 02 | 00 00 00 03 | 00 00 00 05`.
//!
//! Writers take values the caller has already bounded (a string longer than `i16::MAX` bytes
//! is a broken invariant and panics). [`Reader`] takes bytes from anywhere: every length and
//! count it reads is checked against the bytes left before anything is taken or reserved.

use bytes::BufMut;

/// A key or value that does not decode; the caller skips the record and logs why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRecord(pub &'static str);

impl std::fmt::Display for BadRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed record: {}", self.0)
    }
}

impl std::error::Error for BadRecord {}

/// Writes a string. Its length must fit an i16: callers bound what they store.
pub fn put_str(out: &mut impl BufMut, s: &str) {
    let len = i16::try_from(s.len()).expect("string length bounded by the caller");
    out.put_i16(len);
    out.put_slice(s.as_bytes());
}

/// Writes a nullable string.
pub fn put_opt_str(out: &mut impl BufMut, s: Option<&str>) {
    match s {
        Some(s) => put_str(out, s),
        None => out.put_i16(-1),
    }
}

/// Writes a byte string. Its length must fit an i32: callers bound what they store.
pub fn put_bytes(out: &mut impl BufMut, b: &[u8]) {
    put_count(out, b.len());
    out.put_slice(b);
}

/// Writes an array count (the elements follow). It must fit an i32.
pub fn put_count(out: &mut impl BufMut, n: usize) {
    let n = i32::try_from(n).expect("count bounded by the caller");
    out.put_i32(n);
}

/// A bounds-checked reader over a record key or value.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    /// The bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], BadRecord> {
        if self.buf.len() < n {
            return Err(BadRecord("truncated"));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], BadRecord> {
        Ok(self.take(N)?.try_into().expect("take returns N bytes"))
    }

    pub fn i8(&mut self) -> Result<i8, BadRecord> {
        Ok(i8::from_be_bytes(self.array()?))
    }

    pub fn i16(&mut self) -> Result<i16, BadRecord> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    pub fn i32(&mut self) -> Result<i32, BadRecord> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    pub fn i64(&mut self) -> Result<i64, BadRecord> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    /// A nullable string.
    pub fn opt_str(&mut self) -> Result<Option<String>, BadRecord> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        let raw = self.take(len as usize)?;
        std::str::from_utf8(raw)
            .map(|s| Some(s.to_owned()))
            .map_err(|_| BadRecord("string is not UTF-8"))
    }

    /// A string that must not be null.
    pub fn str(&mut self) -> Result<String, BadRecord> {
        self.opt_str()?.ok_or(BadRecord("null string"))
    }

    /// A nullable byte string, borrowed from the record.
    pub fn opt_bytes(&mut self) -> Result<Option<&'a [u8]>, BadRecord> {
        let len = self.i32()?;
        if len < 0 {
            return Ok(None);
        }
        self.take(len as usize).map(Some)
    }

    /// A nullable array's count, checked against the bytes left before the caller reserves
    /// anything for it: each element takes at least `element_min_bytes` (at least 1).
    pub fn count(&mut self, element_min_bytes: usize) -> Result<Option<usize>, BadRecord> {
        let count = self.i32()?;
        if count == -1 {
            return Ok(None);
        }
        if count < 0 || count as usize > self.buf.len() / element_min_bytes.max(1) {
            return Err(BadRecord("array count exceeds the record"));
        }
        Ok(Some(count as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fields_are_written_as_kafka_writes_them() {
        let mut out = Vec::new();
        put_str(&mut out, "ab");
        put_opt_str(&mut out, None);
        put_opt_str(&mut out, Some(""));
        put_bytes(&mut out, &[7]);
        put_count(&mut out, 2);
        assert_eq!(
            out,
            [0, 2, b'a', b'b', 0xff, 0xff, 0, 0, 0, 0, 0, 1, 7, 0, 0, 0, 2]
        );
    }

    #[test]
    fn fields_read_back_and_bad_ones_are_errors() {
        let bytes = [
            0, 2, b'a', b'b', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1, 7,
        ];
        let mut r = Reader::new(&bytes);
        assert_eq!(r.opt_str(), Ok(Some("ab".into())));
        assert_eq!(r.opt_str(), Ok(None));
        assert_eq!(r.opt_bytes(), Ok(None));
        assert_eq!(r.opt_bytes(), Ok(Some(&[7][..])));
        assert_eq!(r.remaining(), 0);
        assert_eq!(r.i8(), Err(BadRecord("truncated")));

        assert_eq!(
            Reader::new(&[0xff, 0xff]).str(),
            Err(BadRecord("null string"))
        );
        assert_eq!(
            Reader::new(&[0, 1, 0xc3]).str(),
            Err(BadRecord("string is not UTF-8"))
        );
        assert_eq!(
            Reader::new(&[0, 3, b'a']).str(),
            Err(BadRecord("truncated"))
        );
        assert_eq!(Reader::new(&[0xff, 0xff, 0xff, 0xff]).opt_bytes(), Ok(None));
        assert_eq!(
            Reader::new(&[0, 0, 0, 9, 1]).opt_bytes(),
            Err(BadRecord("truncated"))
        );
    }

    #[test]
    fn a_count_is_bounded_by_the_bytes_left() {
        // Two elements of at least 4 bytes need 8 bytes; 7 are left.
        let mut bytes = vec![0, 0, 0, 2];
        bytes.extend_from_slice(&[0; 7]);
        assert_eq!(
            Reader::new(&bytes).count(4),
            Err(BadRecord("array count exceeds the record"))
        );
        bytes.push(0);
        assert_eq!(Reader::new(&bytes).count(4), Ok(Some(2)));
        assert_eq!(Reader::new(&[0xff, 0xff, 0xff, 0xff]).count(4), Ok(None));
        assert_eq!(
            Reader::new(&[0xff, 0xff, 0xff, 0xfe]).count(4),
            Err(BadRecord("array count exceeds the record"))
        );
        assert_eq!(
            Reader::new(&[0x7f, 0xff, 0xff, 0xff]).count(0),
            Err(BadRecord("array count exceeds the record"))
        );
    }

    proptest! {
        /// Whatever is written reads back as itself, field by field, to the last byte.
        #[test]
        fn written_fields_read_back(s in "\\PC{0,40}", o in proptest::option::of("\\PC{0,40}"),
                                    b in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
                                    n in any::<i8>(), m in any::<i64>()) {
            let mut out = Vec::new();
            put_str(&mut out, &s);
            put_opt_str(&mut out, o.as_deref());
            match &b {
                Some(b) => put_bytes(&mut out, b),
                None => out.put_i32(-1),
            }
            out.put_i8(n);
            out.put_i64(m);
            let mut r = Reader::new(&out);
            prop_assert_eq!(r.str().unwrap(), s);
            prop_assert_eq!(r.opt_str().unwrap(), o);
            prop_assert_eq!(r.opt_bytes().unwrap().map(<[u8]>::to_vec), b);
            prop_assert_eq!(r.i8().unwrap(), n);
            prop_assert_eq!(r.i64().unwrap(), m);
            prop_assert_eq!(r.remaining(), 0);
        }

        /// Any bytes either read or fail; a count read is never more than the bytes left.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64),
                                       element_min_bytes in 0usize..16) {
            let mut r = Reader::new(&bytes);
            let _ = r.opt_str();
            let _ = r.opt_bytes();
            if let Ok(Some(count)) = r.count(element_min_bytes) {
                prop_assert!(count * element_min_bytes.max(1) <= r.remaining());
            }
        }
    }
}
