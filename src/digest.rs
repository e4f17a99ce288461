//! Content digests and the check that every blob is what its descriptor says.
//!
//! Used by every image source (registry, OCI layout, archive): a blob is hashed while it streams,
//! its size is enforced as it arrives (a hostile server cannot make us read past the descriptor),
//! and a mismatch at the end is an error, never a result.

use std::fmt;
use std::io::{self, Read};

use sha2::{Digest as _, Sha256, Sha512};

/// A parsed `algorithm:hex` content digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Algorithm {
    Sha256,
    Sha512,
}

impl Digest {
    pub fn parse(s: &str) -> Result<Self, VerifyError> {
        let bad = || VerifyError::BadDigest(s.to_string());
        let (alg, hex) = s.split_once(':').ok_or_else(bad)?;
        let (algorithm, len) = match alg {
            "sha256" => (Algorithm::Sha256, 64),
            "sha512" => (Algorithm::Sha512, 128),
            _ => return Err(bad()),
        };
        if hex.len() != len || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad());
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_string(),
        })
    }

    /// The sha256 digest of some bytes.
    pub fn sha256_of(bytes: &[u8]) -> Self {
        Digest {
            algorithm: Algorithm::Sha256,
            hex: hex::encode(Sha256::digest(bytes)),
        }
    }

    /// The digest of `bytes` with this digest's algorithm.
    pub fn same_algorithm_of(&self, bytes: &[u8]) -> Self {
        let mut h = Hasher::new(self.algorithm);
        h.update(bytes);
        h.finish()
    }

    /// The hex part (for file names in OCI layouts).
    pub fn hex(&self) -> &str {
        &self.hex
    }

    pub fn algorithm(&self) -> &'static str {
        match self.algorithm {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm(), self.hex)
    }
}

enum Hasher {
    Sha256(Box<Sha256>),
    Sha512(Box<Sha512>),
}

impl Hasher {
    fn new(a: Algorithm) -> Self {
        match a {
            Algorithm::Sha256 => Hasher::Sha256(Box::default()),
            Algorithm::Sha512 => Hasher::Sha512(Box::default()),
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    fn finish(self) -> Digest {
        match self {
            Hasher::Sha256(h) => Digest {
                algorithm: Algorithm::Sha256,
                hex: hex::encode(h.finalize()),
            },
            Hasher::Sha512(h) => Digest {
                algorithm: Algorithm::Sha512,
                hex: hex::encode(h.finalize()),
            },
        }
    }
}

/// Why a blob was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("invalid digest {0:?}")]
    BadDigest(String),
    #[error("digest mismatch: the descriptor says {expected}, the content hashes to {actual}")]
    Mismatch { expected: String, actual: String },
    #[error("blob is larger than the {expected} bytes its descriptor declares")]
    TooLong { expected: u64 },
    #[error("blob truncated: got {got} of the {expected} bytes its descriptor declares")]
    Truncated { got: u64, expected: u64 },
}

impl From<VerifyError> for io::Error {
    fn from(e: VerifyError) -> Self {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// Checks a blob as it streams past.
pub struct Verifier {
    hasher: Hasher,
    expected: Digest,
    size: Option<u64>,
    seen: u64,
}

impl Verifier {
    /// `size` is the descriptor's size; `None` only where no descriptor gives one.
    pub fn new(expected: &Digest, size: Option<u64>) -> Self {
        Verifier {
            hasher: Hasher::new(expected.algorithm),
            expected: expected.clone(),
            size,
            seen: 0,
        }
    }

    pub fn update(&mut self, bytes: &[u8]) -> Result<(), VerifyError> {
        self.seen += bytes.len() as u64;
        if let Some(expected) = self.size
            && self.seen > expected
        {
            return Err(VerifyError::TooLong { expected });
        }
        self.hasher.update(bytes);
        Ok(())
    }

    pub fn seen(&self) -> u64 {
        self.seen
    }

    pub fn finish(self) -> Result<(), VerifyError> {
        if let Some(expected) = self.size
            && self.seen < expected
        {
            return Err(VerifyError::Truncated {
                got: self.seen,
                expected,
            });
        }
        let actual = self.hasher.finish();
        if actual != self.expected {
            return Err(VerifyError::Mismatch {
                expected: self.expected.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(())
    }
}

/// A reader that verifies what it reads; the end of the stream is an error unless the blob
/// matched its digest and size.
pub struct VerifyingReader<R> {
    inner: R,
    verifier: Option<Verifier>,
}

impl<R: Read> VerifyingReader<R> {
    pub fn new(inner: R, expected: &Digest, size: Option<u64>) -> Self {
        VerifyingReader {
            inner,
            verifier: Some(Verifier::new(expected, size)),
        }
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            if let Some(v) = self.verifier.take() {
                v.finish()?;
            }
        } else if let Some(v) = &mut self.verifier {
            v.update(&buf[..n])?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(data: &[u8], digest: &Digest, size: Option<u64>) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        VerifyingReader::new(data, digest, size).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn matching_blob_reads_through() {
        let d = Digest::sha256_of(b"hello");
        assert_eq!(read_all(b"hello", &d, Some(5)).unwrap(), b"hello");
    }

    #[test]
    fn mismatched_digest_is_an_error_at_the_end() {
        let d = Digest::sha256_of(b"hello");
        let e = read_all(b"hellO", &d, Some(5)).unwrap_err();
        assert!(e.to_string().contains("digest mismatch"), "{e}");
    }

    #[test]
    fn short_and_long_blobs_are_refused() {
        let d = Digest::sha256_of(b"hello");
        let e = read_all(b"hell", &d, Some(5)).unwrap_err();
        assert!(e.to_string().contains("truncated: got 4 of the 5"), "{e}");
        let e = read_all(b"hello!", &d, Some(5)).unwrap_err();
        assert!(e.to_string().contains("larger than the 5 bytes"), "{e}");
    }

    #[test]
    fn digests_parse_strictly() {
        assert!(Digest::parse("sha256:abc").is_err());
        assert!(Digest::parse("md5:d41d8cd98f00b204e9800998ecf8427e").is_err());
        let upper = format!("sha256:{}", "A".repeat(64));
        assert!(Digest::parse(&upper).is_err());
        let d = Digest::sha256_of(b"");
        assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
    }
}
