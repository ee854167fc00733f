//! Downloads: a whole object or one HTTP range of it, into a caller's buffer, with the
//! retries the SDK does not make (a body that breaks off after the answer began).

use std::time::Duration;

use super::{map_err, S3Store};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::store::FileKind;

/// Exponential backoff with full jitter: a random wait of up to 200 ms × 2^(attempt-1), at
/// most 10 s.
fn backoff(attempt: u32) -> Duration {
    let cap_ms = (200u64 << attempt.saturating_sub(1).min(6)).min(10_000);
    let mut r = [0u8; 8];
    // Without randomness the full wait is still a valid backoff.
    let r = match crate::crypto::random::fill(&mut r) {
        Ok(()) => u64::from_le_bytes(r),
        Err(_) => u64::MAX,
    };
    Duration::from_millis(r % (cap_ms + 1))
}

impl S3Store {
    /// GETs a whole object, or one HTTP range of it, into `buf` (emptied first). The SDK
    /// retries a request that fails; a body that breaks off, or ends before its
    /// `Content-Length`, after the answer began is retried here, within the same attempt
    /// budget. A body longer than the range or its `Content-Length` is refused at once.
    pub(super) async fn fetch(
        &self,
        kind: FileKind,
        id: &Id,
        range: Option<(u64, u64)>,
        mut buf: Vec<u8>,
    ) -> Result<Vec<u8>> {
        let name = self.name(kind, id);
        let mut attempt = 1;
        loop {
            let started = std::time::Instant::now();
            let out = self
                .client
                .get_object()
                .bucket(&self.url.bucket)
                .key(self.key(kind, id))
                .set_range(range.map(|(from, len)| format!("bytes={from}-{}", from + len - 1)))
                .send()
                .await
                .map_err(|e| map_err(&name, e))?;
            let announced = out.content_length();
            // What the body may hold: no more than asked for, nor than announced.
            let limit = match (range, announced.and_then(|n| usize::try_from(n).ok())) {
                (Some((_, len)), Some(n)) => Some(n.min(len as usize)),
                (Some((_, len)), None) => Some(len as usize),
                (None, n) => n,
            };
            // Room for it up front (within reason: the server is not trusted with an
            // allocation), so that frames are copied once. A buffer too small is replaced, not
            // grown: growing would copy its stale contents.
            let room = limit.unwrap_or(0).min(64 << 20);
            buf.clear();
            if buf.capacity() < room {
                buf = Vec::with_capacity(room);
            }
            let mut body = out.body;
            let broke = loop {
                match body.next().await {
                    Some(Ok(frame)) => match limit {
                        // A complete but wrong answer: not retried.
                        Some(l) if buf.len() + frame.len() > l => {
                            return Err(Error::integrity(
                                name,
                                format!("body longer than the {l} bytes asked for or announced"),
                            ));
                        }
                        _ => buf.extend_from_slice(&frame),
                    },
                    Some(Err(e)) => break format!("download broke off: {e}"),
                    None => match announced {
                        Some(n) if usize::try_from(n).ok() != Some(buf.len()) => {
                            break format!(
                                "body of {} bytes where the answer announced {n}",
                                buf.len()
                            )
                        }
                        _ => {
                            // `CUSTODY_LOG=custody::store=trace` shows each read's round trip.
                            tracing::trace!(object = %name, bytes = buf.len(), ms = started.elapsed().as_millis() as u64, "get");
                            return Ok(buf);
                        }
                    },
                }
            };
            if attempt >= self.max_attempts {
                return Err(Error::Unavailable(format!(
                    "{name}: {broke} (gave up after {attempt} attempts)"
                )));
            }
            tracing::debug!(object = %name, attempt, "{broke}; trying again");
            tokio::time::sleep(backoff(attempt)).await;
            attempt += 1;
        }
    }
}
