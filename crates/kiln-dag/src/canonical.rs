//! The canonical byte encoding that vertex digests are computed over.
//!
//! Each value is written with a one-byte kind and, for variable-length data,
//! a little-endian u64 length, so no two different sequences of values share
//! an encoding. The encoding is a contract: the same op gives the same bytes
//! on every machine and every kiln build with the same [`DOMAIN`].

/// Prefix of every digest input; bump it when the encoding changes.
pub const DOMAIN: &[u8] = b"kiln-dag/v1\0";

/// A value with a canonical encoding.
pub trait Canonical {
    fn encode(&self, e: &mut Encoder);
}

/// Accumulates the canonical bytes of a value.
#[derive(Debug, Default)]
pub struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    pub fn new() -> Encoder {
        Encoder {
            buf: DOMAIN.to_vec(),
        }
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    fn len_prefixed(&mut self, kind: u8, data: &[u8]) {
        self.buf.push(kind);
        self.buf
            .extend_from_slice(&(data.len() as u64).to_le_bytes());
        self.buf.extend_from_slice(data);
    }

    /// A variant or section name.
    pub fn tag(&mut self, t: &str) {
        self.len_prefixed(b't', t.as_bytes());
    }

    pub fn str(&mut self, s: &str) {
        self.len_prefixed(b's', s.as_bytes());
    }

    pub fn bytes(&mut self, b: &[u8]) {
        self.len_prefixed(b'b', b);
    }

    pub fn u64(&mut self, v: u64) {
        self.buf.push(b'u');
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn bool(&mut self, v: bool) {
        self.buf.push(if v { b'T' } else { b'F' });
    }

    pub fn strs(&mut self, v: &[String]) {
        self.u64(v.len() as u64);
        for s in v {
            self.str(s);
        }
    }

    pub fn opt_str(&mut self, v: Option<&str>) {
        match v {
            Some(s) => {
                self.bool(true);
                self.str(s);
            }
            None => self.bool(false),
        }
    }

    pub fn opt_u64(&mut self, v: Option<u64>) {
        match v {
            Some(n) => {
                self.bool(true);
                self.u64(n);
            }
            None => self.bool(false),
        }
    }

    pub fn opt<T: Canonical>(&mut self, v: Option<&T>) {
        match v {
            Some(x) => {
                self.bool(true);
                x.encode(self);
            }
            None => self.bool(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(f: impl FnOnce(&mut Encoder)) -> Vec<u8> {
        let mut e = Encoder::new();
        f(&mut e);
        e.into_bytes()
    }

    #[test]
    fn string_boundaries_are_unambiguous() {
        let a = enc(|e| {
            e.str("ab");
            e.str("c");
        });
        let b = enc(|e| {
            e.str("a");
            e.str("bc");
        });
        assert_ne!(a, b);
    }

    #[test]
    fn kinds_are_distinguished() {
        assert_ne!(enc(|e| e.str("x")), enc(|e| e.tag("x")));
        assert_ne!(enc(|e| e.str("x")), enc(|e| e.bytes(b"x")));
        assert_ne!(enc(|e| e.opt_str(None)), enc(|e| e.opt_str(Some(""))));
    }
}
