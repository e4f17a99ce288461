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
/// The most ranges asked for in one request: the `Range` header stays within a few KiB, which
/// registries and the proxies in front of them accept.
pub const MAX_RANGES_PER_REQUEST: usize = 128;
/// Multipart framing accepted per part (delimiter, `Content-Type`, `Content-Range`).
const MAX_PART_OVERHEAD: u64 = 512;

/// What a registry answered to a range request.
#[derive(Debug)]
pub enum RangeRead {
    /// Exactly the bytes asked for.
    Bytes(Bytes),
    /// The registry answered with this (successful) status instead of `206 Partial Content`: it
    /// does not serve ranges. The body was not read.
    Ignored { status: u16 },
}

/// What a registry answered to a request for several ranges.
#[derive(Debug)]
pub enum RangesRead {
    /// The bytes of each range asked for, in order, and the body's length (the ranges plus the
    /// multipart framing): what was fetched.
    Parts { parts: Vec<Bytes>, fetched: u64 },
    /// As [`RangeRead::Ignored`].
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
                Body::Range(header(offset, len)),
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

impl Registry {
    /// Reads several ranges of the blob `digest` in one request (`Range: bytes=A-B,C-D,…`),
    /// answered as `multipart/byteranges`. The ranges must be sorted, apart from each other
    /// (not touching, so that no server merges them), inside the blob, at most
    /// [`MAX_RANGES_PER_REQUEST`] of them and at most [`MAX_RANGE_BYTES`] together; the answer
    /// must hold exactly them, in order.
    pub async fn blob_ranges(
        &self,
        image: &Reference,
        digest: &str,
        size: u64,
        ranges: &[(u64, u64)],
        credentials: &[&Credential],
    ) -> Result<RangesRead, RegistryError> {
        let what = format!(
            "{} ranges of blob {digest} of {}",
            ranges.len(),
            image.whole()
        );
        Digest::parse(digest).map_err(|source| RegistryError::Verify {
            what: what.clone(),
            source,
        })?;
        let refuse = |detail: String| RegistryError::Refused {
            what: what.clone(),
            detail,
        };
        let total: u64 = ranges.iter().map(|r| r.1).sum();
        let ordered = ranges
            .windows(2)
            .all(|w| w[0].0.saturating_add(w[0].1) < w[1].0);
        let inside = ranges
            .iter()
            .all(|&(o, l)| l > 0 && o.checked_add(l).is_some_and(|e| e <= size));
        if ranges.is_empty()
            || ranges.len() > MAX_RANGES_PER_REQUEST
            || total > MAX_RANGE_BYTES
            || !ordered
            || !inside
        {
            return Err(refuse(format!(
                "1 to {MAX_RANGES_PER_REQUEST} sorted, separate, non-empty ranges of at most \
                 {MAX_RANGE_BYTES} bytes together, inside the {size}-byte blob, are read at once"
            )));
        }
        let value = format!(
            "bytes={}",
            ranges
                .iter()
                .map(|&(o, l)| format!("{o}-{}", o + l - 1))
                .collect::<Vec<_>>()
                .join(",")
        );
        let response = self
            .request(
                Method::GET,
                image,
                &format!("blobs/{digest}"),
                &["*/*"],
                credentials,
                &what,
                Body::Range(value),
            )
            .await?;
        let status = response.status();
        if status != StatusCode::PARTIAL_CONTENT {
            return Ok(RangesRead::Ignored {
                status: status.as_u16(),
            });
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let boundary = multipart_boundary(&content_type)
            .filter(|_| ranges.len() > 1)
            .ok_or_else(|| {
                refuse(format!(
                    "206 answer of type {content_type:?} to a request for {} ranges, not \
                     multipart/byteranges",
                    ranges.len()
                ))
            })?;
        let cap = total + ranges.len() as u64 * MAX_PART_OVERHEAD + MAX_PART_OVERHEAD;
        let body = match read_capped(response, cap as usize).await {
            Ok(body) => Bytes::from(body),
            Err(BodyError::TooLarge) => {
                return Err(refuse(format!(
                    "the answer is longer than the {total} bytes asked for and their framing"
                )));
            }
            Err(BodyError::Failed(source)) => return Err(self.transport_error(&what, source)),
        };
        let parts = parse_multipart(&body, &boundary, ranges, size).map_err(refuse)?;
        let fetched = body.len() as u64;
        self.traffic
            .blob_bytes
            .fetch_add(fetched, Ordering::Relaxed);
        if let Some(o) = &self.observer {
            o.blob_bytes(image.resolve_registry(), fetched);
        }
        Ok(RangesRead::Parts { parts, fetched })
    }
}

/// The boundary of a `multipart/byteranges` content type.
fn multipart_boundary(content_type: &str) -> Option<String> {
    let mut params = content_type.split(';');
    if !params
        .next()?
        .trim()
        .eq_ignore_ascii_case("multipart/byteranges")
    {
        return None;
    }
    params.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_string())
            .filter(|b| !b.is_empty() && b.len() <= 70)
    })
}

/// The parts of a `multipart/byteranges` body, each checked to be the range asked for.
fn parse_multipart(
    body: &Bytes,
    boundary: &str,
    ranges: &[(u64, u64)],
    size: u64,
) -> Result<Vec<Bytes>, String> {
    let delimiter = format!("--{boundary}");
    let mut at = 0usize;
    let skip_crlf = |at: &mut usize| {
        if body[*at..].starts_with(b"\r\n") {
            *at += 2;
        }
    };
    let mut parts = Vec::with_capacity(ranges.len());
    for (i, &(offset, len)) in ranges.iter().enumerate() {
        skip_crlf(&mut at);
        if !body[at..].starts_with(delimiter.as_bytes()) {
            return Err(format!("part {i} of the multipart answer has no delimiter"));
        }
        at += delimiter.len();
        if !body[at..].starts_with(b"\r\n") {
            return Err(format!(
                "part {i}: the delimiter is not followed by a line end"
            ));
        }
        at += 2;
        let window = &body[at..body.len().min(at + MAX_PART_OVERHEAD as usize)];
        let end = window
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| format!("part {i}: no end of its headers"))?;
        let headers = std::str::from_utf8(&window[..end])
            .map_err(|_| format!("part {i}: headers are not text"))?;
        let announced = headers.split("\r\n").find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-range")
                .then(|| v.trim().to_string())
        });
        let want = (offset, offset + len - 1);
        match announced.as_deref().and_then(parse_content_range) {
            Some((first, last, total))
                if (first, last) == want && total.is_none_or(|t| t == size) => {}
            _ => {
                return Err(format!(
                    "part {i} has Content-Range {:?}, not the range asked for (bytes {}-{}/{size})",
                    announced.unwrap_or_default(),
                    want.0,
                    want.1
                ));
            }
        }
        at += end + 4;
        let data_end = at
            .checked_add(len as usize)
            .filter(|&e| e <= body.len())
            .ok_or_else(|| format!("part {i} is shorter than its {len} bytes"))?;
        parts.push(body.slice(at..data_end));
        at = data_end;
    }
    skip_crlf(&mut at);
    let closing = format!("{delimiter}--");
    if !body[at..].starts_with(closing.as_bytes()) {
        return Err(
            "the multipart answer holds more parts than the ranges asked for, or does not end"
                .into(),
        );
    }
    Ok(parts)
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
    fn multipart_answers_give_exactly_the_ranges_asked_for() {
        let body = Bytes::from_static(
            b"--XB\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes 0-2/100\r\n\r\n\
              abc\r\n--XB\r\ncontent-range: bytes 10-11/100\r\n\r\nde\r\n--XB--\r\n",
        );
        let parts = parse_multipart(&body, "XB", &[(0, 3), (10, 2)], 100).unwrap();
        assert_eq!(parts, vec![&b"abc"[..], &b"de"[..]]);
        let err = parse_multipart(&body, "XB", &[(0, 3), (10, 3)], 100).unwrap_err();
        assert!(err.contains("part 1 has Content-Range"), "{err}");
        let err = parse_multipart(&body, "XB", &[(0, 3)], 100).unwrap_err();
        assert!(err.contains("more parts"), "{err}");
        let err = parse_multipart(&body, "XB", &[(0, 3), (10, 2)], 99).unwrap_err();
        assert!(err.contains("part 0"), "{err}");
        let short = Bytes::from_static(b"--XB\r\nContent-Range: bytes 0-9/100\r\n\r\nabc");
        let err = parse_multipart(&short, "XB", &[(0, 10)], 100).unwrap_err();
        assert!(err.contains("shorter"), "{err}");
        assert_eq!(
            multipart_boundary("multipart/byteranges; boundary=\"a b\""),
            Some("a b".into())
        );
        assert_eq!(multipart_boundary("application/octet-stream"), None);
    }

    #[test]
    fn the_range_header_names_the_last_byte_inclusive() {
        assert_eq!(header(0, 1), "bytes=0-0");
        assert_eq!(header(100, 51), "bytes=100-150");
    }
}
