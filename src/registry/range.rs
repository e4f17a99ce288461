//! A range of a blob, for the lazy-pull formats whose table of contents sits at a known place in
//! the blob: `GET /v2/NAME/blobs/DIGEST` with `Range: bytes=A-B`, under the same auth, redirect,
//! deadline and retry rules as every other exchange ([`Registry::blob`]).
//!
//! A range cannot be checked against the blob's digest (only the whole blob hashes to it): the
//! caller checks what it reads against a digest it already trusts (a TOC's, named by the
//! manifest). What is checked here is the shape of the answer: a `206` whose `Content-Range` is
//! the range asked for and whose body is exactly that long, read whole within the request
//! deadline and never beyond the range's length. A `200` (a registry, proxy or storage backend
//! that ignores `Range`) is reported as [`RangeRead::Ignored`] without reading its body, so the
//! caller can fall back to the streamed read instead of receiving the whole blob twice.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use reqwest::header::CONTENT_RANGE;
use reqwest::{Method, StatusCode};

use super::{Body, BodyError, Credential, Reference, Registry, RegistryError, read_capped};
use crate::digest::Digest;

/// The longest range read at once: the bound of what one answer can make the client hold.
pub const MAX_RANGE_BYTES: u64 = 64 << 20;

/// What a registry answered to a range request.
#[derive(Debug)]
pub enum RangeRead {
    /// Exactly the bytes asked for.
    Bytes(Bytes),
    /// The registry answered with this (successful) status instead of `206 Partial Content`: it
    /// does not serve ranges. The body was not read.
    Ignored { status: u16 },
}

/// The `Range` header value for `len` bytes from `offset` (`len` is at least 1).
pub(super) fn header(offset: u64, len: u64) -> String {
    format!("bytes={offset}-{}", offset + len.max(1) - 1)
}

/// `(first, last, complete length)` from a `Content-Range: bytes A-B/N` header (`N` may be `*`).
fn parse_content_range(value: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (first, last) = span.split_once('-')?;
    let total = match total.trim() {
        "*" => None,
        n => Some(n.parse().ok()?),
    };
    Some((first.trim().parse().ok()?, last.trim().parse().ok()?, total))
}

impl Registry {
    /// Reads `len` bytes of the blob `digest` from `offset`. `size` is the blob's size from its
    /// descriptor: the range must lie inside it, and a `Content-Range` naming another complete
    /// length is refused.
    #[allow(clippy::too_many_arguments)]
    pub async fn blob_range(
        &self,
        image: &Reference,
        digest: &str,
        size: u64,
        offset: u64,
        len: u64,
        credentials: &[&Credential],
    ) -> Result<RangeRead, RegistryError> {
        let end = offset.saturating_add(len);
        let what = format!(
            "bytes {offset}-{} of blob {digest} of {}",
            end.saturating_sub(1),
            image.whole()
        );
        Digest::parse(digest).map_err(|source| RegistryError::Verify {
            what: what.clone(),
            source,
        })?;
        if len == 0 || len > MAX_RANGE_BYTES || end > size {
            return Err(RegistryError::Refused {
                what,
                detail: format!(
                    "a range must hold 1 to {MAX_RANGE_BYTES} bytes inside the {size}-byte blob"
                ),
            });
        }
        let response = self
            .request(
                Method::GET,
                image,
                &format!("blobs/{digest}"),
                &["*/*"],
                credentials,
                &what,
                Body::Range { offset, len },
            )
            .await?;
        let status = response.status();
        if status != StatusCode::PARTIAL_CONTENT {
            // Dropping the response closes the connection without reading the body.
            return Ok(RangeRead::Ignored {
                status: status.as_u16(),
            });
        }
        let bad = |detail: String| RegistryError::Refused {
            what: what.clone(),
            detail,
        };
        let announced = response
            .headers()
            .get(CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        match announced.as_deref().and_then(parse_content_range) {
            Some((first, last, total))
                if first == offset && last == end - 1 && total.is_none_or(|t| t == size) => {}
            _ => {
                return Err(bad(format!(
                    "206 answer with Content-Range {:?}, not the range asked for (bytes {offset}-{}/{size})",
                    announced.unwrap_or_default(),
                    end - 1
                )));
            }
        }
        let body = match read_capped(response, len as usize).await {
            Ok(body) => body,
            Err(BodyError::TooLarge) => {
                return Err(bad(format!(
                    "the answer is longer than the {len} bytes asked for"
                )));
            }
            Err(BodyError::Failed(source)) => return Err(self.transport_error(&what, source)),
        };
        if body.len() as u64 != len {
            return Err(bad(format!(
                "the answer holds {} of the {len} bytes asked for",
                body.len()
            )));
        }
        self.traffic.blob_bytes.fetch_add(len, Ordering::Relaxed);
        if let Some(o) = &self.observer {
            o.blob_bytes(image.resolve_registry(), len);
        }
        Ok(RangeRead::Bytes(body.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_headers_are_read_with_or_without_the_complete_length() {
        assert_eq!(
            parse_content_range("bytes 0-99/1000"),
            Some((0, 99, Some(1000)))
        );
        assert_eq!(parse_content_range("bytes 5-5/*"), Some((5, 5, None)));
        assert_eq!(parse_content_range("bytes */1000"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
        assert_eq!(parse_content_range("bytes 1-x/2"), None);
    }

    #[test]
    fn the_range_header_names_the_last_byte_inclusive() {
        assert_eq!(header(0, 1), "bytes=0-0");
        assert_eq!(header(100, 51), "bytes=100-150");
    }
}
