//! Netlink attributes (TLVs) as nf_tables uses them: 4-byte aligned, integers in network
//! byte order, strings NUL-terminated, nested attributes flagged `NLA_F_NESTED`.

/// `NLA_F_NESTED`.
const NESTED: u16 = 0x8000;
/// Flags in the type field (`NLA_F_NESTED | NLA_F_NET_BYTEORDER`).
const TYPE_MASK: u16 = 0x3fff;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Appends attributes to a buffer.
#[derive(Debug, Default, Clone)]
pub(crate) struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        self.buf
    }

    /// Raw value.
    pub(crate) fn bytes(&mut self, kind: u16, value: &[u8]) -> &mut Self {
        let len = 4 + value.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(value);
        self.buf.resize(self.buf.len() + align4(len) - len, 0);
        self
    }

    /// NUL-terminated string.
    pub(crate) fn str(&mut self, kind: u16, s: &str) -> &mut Self {
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        self.bytes(kind, &v)
    }

    /// u32, network byte order.
    pub(crate) fn u32(&mut self, kind: u16, v: u32) -> &mut Self {
        self.bytes(kind, &v.to_be_bytes())
    }

    /// u64, network byte order.
    pub(crate) fn u64(&mut self, kind: u16, v: u64) -> &mut Self {
        self.bytes(kind, &v.to_be_bytes())
    }

    /// Nested attributes written by `f`.
    pub(crate) fn nested(&mut self, kind: u16, f: impl FnOnce(&mut Writer)) -> &mut Self {
        let mut inner = Writer::new();
        f(&mut inner);
        self.bytes(kind | NESTED, &inner.buf)
    }
}

/// Iterates `(type without flags, value)` over a buffer of attributes; stops at the first
/// malformed one.
pub(crate) fn iter(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & TYPE_MASK;
        if len < 4 || len > buf.len() {
            return None;
        }
        let value = &buf[4..len];
        buf = buf.get(align4(len)..).unwrap_or_default();
        Some((kind, value))
    })
}

/// The first attribute of type `kind`.
pub(crate) fn find(buf: &[u8], kind: u16) -> Option<&[u8]> {
    iter(buf).find(|(k, _)| *k == kind).map(|(_, v)| v)
}

/// A NUL-terminated string value.
pub(crate) fn str_of(v: &[u8]) -> String {
    let s = v.split(|b| *b == 0).next().unwrap_or_default();
    String::from_utf8_lossy(s).into_owned()
}

/// A big-endian u32 value.
pub(crate) fn u32_of(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?))
}

/// A big-endian u64 value.
pub(crate) fn u64_of(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.get(..8)?.try_into().ok()?))
}

/// Attribute `kind` of `buf` as a string.
pub(crate) fn find_str(buf: &[u8], kind: u16) -> Option<String> {
    find(buf, kind).map(str_of)
}

/// Attribute `kind` of `buf` as a big-endian u32.
pub(crate) fn find_u32(buf: &[u8], kind: u16) -> Option<u32> {
    find(buf, kind).and_then(u32_of)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_padding() {
        let mut w = Writer::new();
        w.str(1, "t").u32(2, 0x0a0b0c0d).nested(3, |n| {
            n.bytes(1, &[1, 2, 3, 4, 5]);
        });
        let b = w.finish();
        assert_eq!(
            b,
            [
                6, 0, 1, 0, b't', 0, 0, 0, // "t\0" padded
                8, 0, 2, 0, 10, 11, 12, 13, // big endian
                16, 0, 3, 0x80, 9, 0, 1, 0, 1, 2, 3, 4, 5, 0, 0, 0
            ]
        );
        let all: Vec<(u16, &[u8])> = iter(&b).collect();
        assert_eq!(all.len(), 3);
        assert_eq!(find_str(&b, 1).as_deref(), Some("t"));
        assert_eq!(find_u32(&b, 2), Some(0x0a0b0c0d));
        assert_eq!(find(find(&b, 3).unwrap(), 1), Some(&[1u8, 2, 3, 4, 5][..]));
        // Truncated input stops the iteration instead of panicking.
        assert_eq!(iter(&b[..5]).count(), 0);
        assert_eq!(iter(&[200, 0, 1, 0]).count(), 0);
    }
}
