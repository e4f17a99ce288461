//! Layer files of a `docker save` archive, whatever their compression.
//!
//! `docker save` and containers/image write each layer as an uncompressed tar, but
//! go-containerregistry's tarball writer (kaniko's `--tarPath`, `crane export`) writes them
//! gzip-compressed, and `docker load` accepts gzip, zstd and plain alike. The archive names a
//! layer only by its place in `manifest.json` and the config's diff ID, which is the digest of
//! the *uncompressed* tar. So a layer file's compression is read from its first bytes, and a
//! compressed one is decompressed here, as it streams, and its diff ID checked on what comes out;
//! the file's own digest, when its name carries one (`HEX.tar.gz`, `blobs/sha256/HEX`) other than
//! the diff ID, is checked on the file.

use std::io::{self, Read};

use crate::analysis::Compression;
use crate::digest::{Digest, Verifier, VerifyError, VerifyingReader};

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
/// The bytes [`sniff`] needs.
pub(super) const MAGIC_LEN: usize = 4;

/// The compression of a layer file, from its first bytes (a tar has no magic at its start).
pub(super) fn sniff(head: &[u8]) -> Compression {
    if head.starts_with(GZIP_MAGIC) {
        Compression::Gzip
    } else if head.starts_with(ZSTD_MAGIC) {
        Compression::Zstd
    } else {
        Compression::Plain
    }
}

/// The Docker media type that says how a layer file is compressed.
pub(super) fn media_type(compression: Compression) -> &'static str {
    match compression {
        Compression::Plain => "application/vnd.docker.image.rootfs.diff.tar",
        Compression::Gzip => "application/vnd.docker.image.rootfs.diff.tar.gzip",
        Compression::Zstd => "application/vnd.docker.image.rootfs.diff.tar.zstd",
    }
}

/// The digest a member's name carries: `blobs/ALG/HEX` (Docker 25+), or a file name `HEX.tar`,
/// `HEX.tar.gz`, ... (go-containerregistry), where HEX is a sha256 digest. `None` for names such
/// as `ID/layer.tar`, whose ID is not a content digest.
pub(super) fn named_digest(member: &str) -> Option<Digest> {
    if let Some(rest) = member.strip_prefix("blobs/")
        && let Some((algorithm, hex)) = rest.split_once('/')
    {
        return Digest::parse(&format!("{algorithm}:{hex}")).ok();
    }
    let file = member.rsplit('/').next()?;
    let (stem, _) = file.split_once('.')?;
    Digest::parse(&format!("sha256:{stem}")).ok()
}

/// The uncompressed tar of a compressed layer file, failing at its end unless it hashes to
/// `diff_id`. `file` reads the member (`len` bytes, named `member`).
pub(super) fn uncompressed(
    file: Box<dyn Read + Send>,
    len: u64,
    member: &str,
    compression: Compression,
    diff_id: &Digest,
) -> io::Result<Box<dyn Read + Send>> {
    // A name that is the diff ID itself names the tar, which the diff ID check covers.
    let file: Box<dyn Read + Send> = match named_digest(member).filter(|n| n != diff_id) {
        Some(named) => Box::new(NamedFile {
            inner: VerifyingReader::new(file, &named, Some(len)),
            member: member.to_string(),
        }),
        None => file,
    };
    let decoder: Box<dyn Read + Send> = match compression {
        Compression::Plain => file,
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(file)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(file)?),
    };
    Ok(Box::new(DiffIdCheck {
        decoder,
        verifier: Some(Verifier::new(diff_id, None)),
        member: member.to_string(),
        compression,
    }))
}

/// Names the member in the errors of the check on the file's own digest.
struct NamedFile<R> {
    inner: VerifyingReader<R>,
    member: String,
}

impl<R: Read> Read for NamedFile<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner
            .read(buf)
            .map_err(|e| io::Error::new(e.kind(), format!("layer file {}: {e}", self.member)))
    }
}

/// Hashes the decompressed stream and checks it against the diff ID at its end.
struct DiffIdCheck {
    decoder: Box<dyn Read + Send>,
    verifier: Option<Verifier>,
    member: String,
    compression: Compression,
}

impl Read for DiffIdCheck {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.decoder.read(buf).map_err(|e| {
            // The file's own digest check already names the member.
            if e.to_string().starts_with("layer file ") {
                e
            } else {
                io::Error::new(
                    e.kind(),
                    format!(
                        "layer file {} ({:?}): decompressing: {e}",
                        self.member, self.compression
                    ),
                )
            }
        })?;
        let mismatch = |e: VerifyError| {
            let detail = match e {
                VerifyError::Mismatch { expected, actual } => format!(
                    "the config's diff_id is {expected}, the uncompressed content hashes to {actual}"
                ),
                other => other.to_string(),
            };
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "diff_id mismatch in layer file {} ({:?}): {detail}",
                    self.member, self.compression
                ),
            )
        };
        if n == 0 && !buf.is_empty() {
            if let Some(v) = self.verifier.take() {
                v.finish().map_err(mismatch)?;
            }
        } else if let Some(v) = &mut self.verifier {
            v.update(&buf[..n]).map_err(mismatch)?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn read(
        file: Vec<u8>,
        member: &str,
        compression: Compression,
        diff_id: &Digest,
    ) -> io::Result<Vec<u8>> {
        let len = file.len() as u64;
        let mut r = uncompressed(
            Box::new(io::Cursor::new(file)),
            len,
            member,
            compression,
            diff_id,
        )?;
        let mut out = Vec::new();
        r.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn compression_is_read_from_the_first_bytes() {
        assert_eq!(sniff(&gzip(b"x")[..MAGIC_LEN]), Compression::Gzip);
        let z = zstd::encode_all(&b"x"[..], 1).unwrap();
        assert_eq!(sniff(&z[..MAGIC_LEN]), Compression::Zstd);
        assert_eq!(sniff(b"etc/"), Compression::Plain);
        assert_eq!(sniff(b""), Compression::Plain);
    }

    #[test]
    fn names_carry_digests_only_when_they_are_digests() {
        let hex = "a".repeat(64);
        let d = Some(Digest::parse(&format!("sha256:{hex}")).unwrap());
        assert_eq!(named_digest(&format!("{hex}.tar.gz")), d);
        assert_eq!(named_digest(&format!("{hex}.tar")), d);
        assert_eq!(named_digest(&format!("blobs/sha256/{hex}")), d);
        assert_eq!(named_digest(&format!("{hex}/layer.tar")), None);
        assert_eq!(named_digest("layer.tar"), None);
        assert_eq!(named_digest("blobs/sha256/short"), None);
    }

    #[test]
    fn a_gzip_layer_is_checked_against_its_diff_id_after_decompression() {
        let tar = b"pretend this is a tar".to_vec();
        let diff_id = Digest::sha256_of(&tar);
        let file = gzip(&tar);
        let named = format!("{}.tar.gz", Digest::sha256_of(&file).hex());
        assert_eq!(
            read(file.clone(), &named, Compression::Gzip, &diff_id).unwrap(),
            tar
        );
        assert_eq!(
            read(file.clone(), "x/layer.tar", Compression::Gzip, &diff_id).unwrap(),
            tar
        );
        // Named by its diff ID rather than by the file's digest: also a tool's choice.
        let by_diff_id = format!("{}.tar.gz", diff_id.hex());
        assert_eq!(
            read(file.clone(), &by_diff_id, Compression::Gzip, &diff_id).unwrap(),
            tar
        );

        let other = Digest::sha256_of(b"another tar");
        let e = read(file.clone(), &named, Compression::Gzip, &other).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("diff_id mismatch in layer file {named} (Gzip)")),
            "{msg}"
        );
        assert!(
            msg.contains(&format!("the config's diff_id is {other}")),
            "{msg}"
        );
        assert!(
            msg.contains(&format!("uncompressed content hashes to {diff_id}")),
            "{msg}"
        );

        // A file whose name promises another digest is refused, naming the file.
        let wrong_name = format!("{}.tar.gz", "b".repeat(64));
        let msg = read(file, &wrong_name, Compression::Gzip, &diff_id)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains(&format!("layer file {wrong_name}: digest mismatch")),
            "{msg}"
        );
    }

    #[test]
    fn zstd_layers_and_corrupt_streams() {
        let tar = b"zstd tar".to_vec();
        let diff_id = Digest::sha256_of(&tar);
        let z = zstd::encode_all(&tar[..], 3).unwrap();
        assert_eq!(
            read(z, "l.tar.zst", Compression::Zstd, &diff_id).unwrap(),
            tar
        );

        let mut bad = gzip(&tar);
        let n = bad.len();
        bad[n / 2] ^= 0xff;
        let msg = read(bad, "x/layer.tar", Compression::Gzip, &diff_id)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("layer file x/layer.tar (Gzip)"), "{msg}");
    }
}
