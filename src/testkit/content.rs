//! Deterministic file content: noise for exact-size test files, and generated content that
//! compresses like real text, machine code or already-compressed files, produced as it is read
//! so that a gigabyte of it never sits in memory.

use std::io::{self, Read};
use std::sync::OnceLock;

/// Deterministic bytes that do not compress (so compressed sizes are realistic).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// splitmix64: fast, deterministic, good enough for synthetic content.
#[derive(Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// A generator seeded from a name, so that content can be derived from a path.
    pub fn from_name(name: &str) -> Self {
        let digest = <sha2::Sha256 as sha2::Digest>::digest(name.as_bytes());
        Rng(u64::from_le_bytes(digest[..8].try_into().expect("8 bytes")))
    }

    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Log-uniform in [lo, hi]: many small values, a few large ones, like file sizes.
    pub fn log_uniform(&mut self, lo: u64, hi: u64) -> u64 {
        let (a, b) = ((lo as f64).ln(), (hi as f64).ln());
        (a + self.unit() * (b - a)).exp() as u64
    }

    /// Appends `len` incompressible bytes to `v`.
    pub fn fill(&mut self, v: &mut Vec<u8>, len: usize) {
        let end = v.len() + len;
        while v.len() < end {
            let x = self.next().to_le_bytes();
            let k = (end - v.len()).min(8);
            v.extend_from_slice(&x[..k]);
        }
    }
}

/// What generated content looks like to a compressor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Words from a small vocabulary: source code, docs, lists (gzip ~3x).
    Text,
    /// Machine-code-like: random runs, zero padding, repeated snippets (gzip ~2x).
    Binary,
    /// Already compressed (.gz, .deb, .png): incompressible.
    Random,
}

/// A file's content, generated as it is read.
pub struct Content {
    rng: Rng,
    kind: Kind,
    left: u64,
    chunk: Vec<u8>,
    pos: usize,
}

const VOCAB: usize = 2048;

fn vocabulary() -> &'static Vec<Vec<u8>> {
    static V: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    V.get_or_init(|| {
        let mut rng = Rng(0x005E_ED0F_7E47);
        let common: &[&str] = &[
            "the", "of", "and", "to", "in", "is", "for", "if", "return", "self", "import", "def",
            "const", "let", "function", "var", "this", "from", "None", "true", "false", "null",
            "=", "==", "{", "}", "(", ")", "=>", ";", "#", "//", "license", "version", "error",
        ];
        let mut words: Vec<Vec<u8>> = common.iter().map(|w| w.as_bytes().to_vec()).collect();
        while words.len() < VOCAB {
            let len = 2 + rng.below(11) as usize;
            words.push((0..len).map(|_| b'a' + rng.below(26) as u8).collect());
        }
        words
    })
}

fn snippets() -> &'static Vec<Vec<u8>> {
    static S: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    S.get_or_init(|| {
        let mut rng = Rng(0xC0DE);
        (0..256)
            .map(|_| {
                let len = 2 + rng.below(9) as usize;
                (0..len).map(|_| rng.next() as u8).collect()
            })
            .collect()
    })
}

impl Content {
    /// `size` bytes of `kind`, determined by `seed`.
    pub fn new(seed: u64, kind: Kind, size: u64) -> Self {
        Content {
            rng: Rng(seed),
            kind,
            left: size,
            chunk: Vec::with_capacity(70 << 10),
            pos: 0,
        }
    }

    fn refill(&mut self) {
        const CHUNK: usize = 64 << 10;
        self.chunk.clear();
        self.pos = 0;
        let rng = &mut self.rng;
        match self.kind {
            Kind::Text => {
                let vocab = vocabulary();
                let mut on_line = 0;
                while self.chunk.len() < CHUNK {
                    // Skewed towards the first words, as natural text is.
                    let i = rng.below(VOCAB as u64).min(rng.below(VOCAB as u64)) as usize;
                    self.chunk.extend_from_slice(&vocab[i]);
                    on_line += 1;
                    if on_line > 4 + rng.below(10) {
                        self.chunk.push(b'\n');
                        for _ in 0..rng.below(4) {
                            self.chunk.extend_from_slice(b"    ");
                        }
                        on_line = 0;
                    } else {
                        self.chunk.push(b' ');
                    }
                }
            }
            Kind::Binary => {
                let snippets = snippets();
                while self.chunk.len() < CHUNK {
                    let len = 16 + rng.below(500) as usize;
                    match rng.below(10) {
                        0..=2 => rng.fill(&mut self.chunk, len),
                        3 => self.chunk.resize(self.chunk.len() + len, 0),
                        _ => {
                            let end = self.chunk.len() + len;
                            while self.chunk.len() < end {
                                let s = &snippets[rng.below(64).min(rng.below(256)) as usize];
                                self.chunk.extend_from_slice(s);
                                // Operands: a random byte now and then.
                                if rng.below(4) == 0 {
                                    self.chunk.push(rng.next() as u8);
                                }
                            }
                        }
                    }
                }
            }
            Kind::Random => rng.fill(&mut self.chunk, CHUNK),
        }
    }
}

impl Read for Content {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        if self.pos == self.chunk.len() {
            self.refill();
        }
        let n = buf
            .len()
            .min(self.chunk.len() - self.pos)
            .min(self.left.min(usize::MAX as u64) as usize);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        self.left -= n as u64;
        Ok(n)
    }
}
