//! Content digests in their OCI string form (`sha256:<64 hex>`): blob and
//! manifest names in the store and the registry, and vertex digests of the
//! build graph.

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::str::FromStr;
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256, Sha512};

/// A digest algorithm kiln accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    /// The name in digest strings, e.g. `sha256`.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Length of the digest in bytes.
    pub fn size(self) -> usize {
        match self {
            Algorithm::Sha256 => 32,
            Algorithm::Sha512 => 64,
        }
    }

    fn from_name(name: &str) -> Option<Algorithm> {
        match name {
            "sha256" => Some(Algorithm::Sha256),
            "sha512" => Some(Algorithm::Sha512),
            _ => None,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a string is not a digest kiln accepts.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DigestError {
    #[error("digest `{0}` has no algorithm prefix: expected `sha256:<64 hex digits>`")]
    MissingAlgorithm(String),
    #[error("digest `{digest}` uses algorithm `{algorithm}`: only sha256 and sha512 are supported")]
    UnsupportedAlgorithm { digest: String, algorithm: String },
    #[error(
        "digest `{digest}` must have exactly {} lower-case hex digits after `{algorithm}:`",
        2 * .algorithm.size()
    )]
    BadHex {
        digest: String,
        algorithm: Algorithm,
    },
}

impl DigestError {
    /// What a digest should look like, for help texts.
    pub fn expected(&self) -> String {
        match self {
            DigestError::MissingAlgorithm(_) => {
                "`sha256:` followed by 64 lowercase hex digits".to_string()
            }
            DigestError::UnsupportedAlgorithm { .. } => "a sha256 or sha512 digest".to_string(),
            DigestError::BadHex { algorithm, .. } => format!(
                "`{algorithm}:` followed by {} lowercase hex digits",
                2 * algorithm.size()
            ),
        }
    }
}

/// A digest: an algorithm and its bytes. Always valid. `Copy` and 40
/// bytes, as vertex digests are passed around by value and digests sit in
/// many error values: a sha256 is held inline, the rarer sha512 (kiln's
/// store names blobs by sha256) is interned for the life of the process.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest {
    // First, so that every sha256 sorts before every sha512, as in text.
    sha512: Option<&'static [u8; 64]>,
    // A sha256; for a sha512 its first half (the whole is above).
    bytes: [u8; 32],
}

/// Every sha512 seen, so each is leaked once however often it is parsed.
fn intern(bytes: [u8; 64]) -> &'static [u8; 64] {
    static SEEN: OnceLock<Mutex<HashSet<&'static [u8; 64]>>> = OnceLock::new();
    let mut seen = SEEN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(b) = seen.get(&bytes) {
        return b;
    }
    let b: &'static [u8; 64] = Box::leak(Box::new(bytes));
    seen.insert(b);
    b
}

impl Digest {
    fn new(algorithm: Algorithm, digest: &[u8]) -> Digest {
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(&digest[..32]);
        let sha512 = match algorithm {
            Algorithm::Sha256 => None,
            Algorithm::Sha512 => Some(intern(digest.try_into().expect("64 bytes"))),
        };
        Digest { sha512, bytes }
    }

    /// The sha256 of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest::from_hasher(Sha256::new_with_prefix(bytes))
    }

    /// The digest of `bytes` with `algorithm`.
    pub fn compute(algorithm: Algorithm, bytes: &[u8]) -> Digest {
        let mut h = Hasher::new(algorithm);
        h.update(bytes);
        h.finish()
    }

    /// Whether `bytes` hash to this digest (with its own algorithm).
    pub fn is_digest_of(&self, bytes: &[u8]) -> bool {
        Digest::compute(self.algorithm(), bytes) == *self
    }

    /// A sha256 digest from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Digest {
        Digest::new(Algorithm::Sha256, &bytes)
    }

    /// The digest of a finished sha256 hasher.
    pub fn from_hasher(hasher: Sha256) -> Digest {
        Digest::new(Algorithm::Sha256, &hasher.finalize())
    }

    /// Parses `algorithm:hex` (sha256 or sha512, lower-case hex).
    pub fn parse(s: &str) -> Result<Digest, DigestError> {
        let Some((name, hex)) = s.split_once(':') else {
            return Err(DigestError::MissingAlgorithm(s.to_owned()));
        };
        let Some(algorithm) = Algorithm::from_name(name) else {
            return Err(DigestError::UnsupportedAlgorithm {
                digest: s.to_owned(),
                algorithm: name.to_owned(),
            });
        };
        Digest::from_hex_with(algorithm, hex).map_err(|_| DigestError::BadHex {
            digest: s.to_owned(),
            algorithm,
        })
    }

    /// A sha256 digest from its 64 hex digits alone (store file names).
    pub fn from_hex(hex: &str) -> Result<Digest, DigestError> {
        Digest::from_hex_with(Algorithm::Sha256, hex)
    }

    fn from_hex_with(algorithm: Algorithm, hex: &str) -> Result<Digest, DigestError> {
        let n = algorithm.size();
        // Upper-case hex decodes too; the OCI grammar wants lower case only.
        let lower = hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        let mut bytes = [0u8; 64];
        if hex.len() != 2 * n || !lower || hex::decode_to_slice(hex, &mut bytes[..n]).is_err() {
            return Err(DigestError::BadHex {
                digest: hex.to_owned(),
                algorithm,
            });
        }
        Ok(Digest::new(algorithm, &bytes[..n]))
    }

    pub fn algorithm(&self) -> Algorithm {
        match self.sha512 {
            None => Algorithm::Sha256,
            Some(_) => Algorithm::Sha512,
        }
    }

    /// The digest's bytes (32 for sha256).
    pub fn as_bytes(&self) -> &[u8] {
        match self.sha512 {
            None => &self.bytes,
            Some(b) => b,
        }
    }

    /// The hex digits without the algorithm.
    pub fn hex(&self) -> String {
        hex::encode(self.as_bytes())
    }

    /// The first 12 hex digits, as docker shows image IDs.
    pub fn short(&self) -> String {
        hex::encode(&self.bytes[..6])
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.as_bytes();
        let mut buf = [0u8; 128];
        let hex = &mut buf[..2 * bytes.len()];
        hex::encode_to_slice(bytes, hex).expect("buffer fits the digest");
        let hex = std::str::from_utf8(hex).expect("hex is ascii");
        write!(f, "{}:{hex}", self.algorithm())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

// The plain `sha256:<hex>` string, so JSON on disk keeps its form.
impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl From<&Digest> for oci_spec::image::Digest {
    fn from(d: &Digest) -> Self {
        // Our digests are a subset of the OCI grammar.
        oci_spec::image::Digest::from_str(&d.to_string()).expect("a valid OCI digest")
    }
}

impl From<Digest> for oci_spec::image::Digest {
    fn from(d: Digest) -> Self {
        (&d).into()
    }
}

impl TryFrom<&oci_spec::image::Digest> for Digest {
    type Error = DigestError;
    fn try_from(d: &oci_spec::image::Digest) -> Result<Self, Self::Error> {
        Digest::parse(d.as_ref())
    }
}

impl TryFrom<oci_spec::image::Digest> for Digest {
    type Error = DigestError;
    fn try_from(d: oci_spec::image::Digest) -> Result<Self, Self::Error> {
        Digest::try_from(&d)
    }
}

/// Hashes a stream with one algorithm; also an [`io::Write`] sink.
#[derive(Clone)]
pub struct Hasher(HasherState);

#[derive(Clone)]
enum HasherState {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    pub fn new(algorithm: Algorithm) -> Hasher {
        Hasher(match algorithm {
            Algorithm::Sha256 => HasherState::Sha256(Sha256::new()),
            Algorithm::Sha512 => HasherState::Sha512(Sha512::new()),
        })
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match &mut self.0 {
            HasherState::Sha256(h) => h.update(bytes),
            HasherState::Sha512(h) => h.update(bytes),
        }
    }

    pub fn finish(self) -> Digest {
        match self.0 {
            HasherState::Sha256(h) => Digest::from_hasher(h),
            HasherState::Sha512(h) => Digest::new(Algorithm::Sha512, &h.finalize()),
        }
    }
}

impl io::Write for Hasher {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_SHA256: &str =
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const EMPTY_SHA512: &str = "sha512:cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e";

    #[test]
    fn digest_table() {
        let a64 = "a".repeat(64);
        let cases: &[(&str, Result<&str, &str>)] = &[
            (EMPTY_SHA256, Ok(EMPTY_SHA256)),
            (EMPTY_SHA512, Ok(EMPTY_SHA512)),
            ("", Err("has no algorithm prefix")),
            ("abc", Err("has no algorithm prefix")),
            ("sha256:", Err("64 lower-case hex digits")),
            ("sha256:00", Err("64 lower-case hex digits")),
            ("sha256:zz", Err("64 lower-case hex digits")),
            (&format!("sha256:{}", "A".repeat(64)), Err("64 lower-case")),
            (&format!("sha256:{}", "0".repeat(63)), Err("64 lower-case")),
            (&format!("sha256:{}", "0".repeat(65)), Err("64 lower-case")),
            (
                &format!("sha256:../{}", "a".repeat(61)),
                Err("64 lower-case"),
            ),
            (&format!("sha512:{a64}"), Err("128 lower-case hex digits")),
            (&format!("sha384:{a64}"), Err("only sha256 and sha512")),
            (&format!("md5:{a64}"), Err("only sha256 and sha512")),
            (&format!("SHA256:{a64}"), Err("only sha256 and sha512")),
        ];
        for (input, want) in cases {
            match (input.parse::<Digest>(), want) {
                (Ok(d), Ok(s)) => assert_eq!(d.to_string(), *s, "{input}"),
                (Err(e), Err(part)) => assert!(e.to_string().contains(part), "{input}: {e}"),
                (got, _) => panic!("{input}: {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn computes_and_prints() {
        assert_eq!(Digest::of(b"").to_string(), EMPTY_SHA256);
        assert_eq!(
            Digest::compute(Algorithm::Sha512, b"").to_string(),
            EMPTY_SHA512
        );
        let d = Digest::of(b"kiln");
        assert_eq!(d.as_bytes().len(), 32);
        assert_eq!(d.hex().len(), 64);
        assert_eq!(d.short(), d.hex()[..12]);
        assert_eq!(Digest::from_hex(&d.hex()).unwrap(), d);
        assert!(d.is_digest_of(b"kiln"));
        assert!(!d.is_digest_of(b"kiln "));
        let mut h = Hasher::new(Algorithm::Sha256);
        h.update(b"ki");
        h.update(b"ln");
        assert_eq!(h.finish(), d);
        assert!(EMPTY_SHA512.parse::<Digest>().unwrap().is_digest_of(b""));
    }

    #[test]
    fn small_and_interned() {
        assert_eq!(std::mem::size_of::<Digest>(), 40);
        let a: Digest = EMPTY_SHA512.parse().unwrap();
        let b = Digest::compute(Algorithm::Sha512, b"");
        assert_eq!(a, b);
        assert!(
            std::ptr::eq(a.as_bytes(), b.as_bytes()),
            "one copy per sha512"
        );
        assert_eq!(a.algorithm(), Algorithm::Sha512);
        assert_eq!(a.as_bytes().len(), 64);
        assert_ne!(a, Digest::of(b""));
    }

    #[test]
    fn order_is_that_of_the_text() {
        let mut ds: Vec<Digest> = (0..50u8)
            .flat_map(|i| [Digest::of(&[i]), Digest::compute(Algorithm::Sha512, &[i])])
            .collect();
        ds.sort();
        let text: Vec<String> = ds.iter().map(Digest::to_string).collect();
        let mut sorted = text.clone();
        sorted.sort();
        assert_eq!(text, sorted);
    }

    #[test]
    fn serializes_as_the_plain_string() {
        let d: Digest = EMPTY_SHA256.parse().unwrap();
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{EMPTY_SHA256}\""));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        assert!(serde_json::from_str::<Digest>("\"sha256:00\"").is_err());
    }

    #[test]
    fn converts_to_and_from_oci_spec() {
        for s in [EMPTY_SHA256, EMPTY_SHA512] {
            let d: Digest = s.parse().unwrap();
            let oci: oci_spec::image::Digest = d.into();
            assert_eq!(oci.to_string(), s);
            assert_eq!(Digest::try_from(&oci).unwrap(), d);
        }
        let sha384 = oci_spec::image::Digest::from_str(&format!("sha384:{}", "a".repeat(96)))
            .expect("oci-spec knows sha384");
        assert!(matches!(
            Digest::try_from(sha384),
            Err(DigestError::UnsupportedAlgorithm { .. })
        ));
    }
}
