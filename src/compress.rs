//! zstd compression of chunk plaintext; stored raw when compression does not shrink it, or
//! when a cheap probe says it would not.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u8)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None = 0,
    Zstd = 1,
}

impl Compression {
    pub fn from_u8(v: u8) -> Option<Compression> {
        match v {
            0 => Some(Compression::None),
            1 => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// How hard a backup compresses new data (`backup --compression`, as restic's flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CompressionMode {
    /// The repository's configured level; chunks that a probe finds incompressible are stored
    /// raw without compressing them whole.
    #[default]
    Auto,
    /// zstd level 1 (with the same probe): faster, a few percent larger.
    Fast,
    /// zstd level 19 (with the same probe): smallest, many times slower.
    Max,
    /// Store everything raw.
    Off,
}

impl CompressionMode {
    pub const NAMES: [&'static str; 4] = ["auto", "fast", "max", "off"];

    /// The zstd level this mode uses where the repository is configured with `repo_level`.
    pub fn level(self, repo_level: i32) -> i32 {
        match self {
            CompressionMode::Auto => repo_level,
            CompressionMode::Fast => 1,
            CompressionMode::Max => 19,
            CompressionMode::Off => 0,
        }
    }
}

impl std::str::FromStr for CompressionMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(CompressionMode::Auto),
            "fast" => Ok(CompressionMode::Fast),
            "max" => Ok(CompressionMode::Max),
            "off" => Ok(CompressionMode::Off),
            _ => Err(Error::invalid(format!(
                "compression {s:?}: expected one of {}",
                CompressionMode::NAMES.join(", ")
            ))),
        }
    }
}

/// Chunks at least this long are probed before being compressed whole.
const PROBE_FROM: usize = 64 * 1024;
/// The probe compresses this many bytes at each of three places (start, middle, end).
const PROBE_SAMPLE: usize = 4 * 1024;

/// A per-thread compressor: reuses one zstd context instead of creating one per chunk.
pub struct Compressor {
    level: i32,
    zstd: Option<zstd::bulk::Compressor<'static>>,
    /// Level 1, for the probe.
    probe: Option<zstd::bulk::Compressor<'static>>,
}

impl Compressor {
    /// `level` 0 disables compression.
    pub fn new(level: i32) -> Compressor {
        let zstd = if level == 0 {
            None
        } else {
            zstd::bulk::Compressor::new(level).ok()
        };
        let probe = zstd
            .as_ref()
            .and_then(|_| zstd::bulk::Compressor::new(1).ok());
        Compressor { level, zstd, probe }
    }

    /// Appends `data` to `out` as it is to be stored: compressed where zstd is on and shrinks
    /// it (large chunks are probed first), else raw. zstd writes straight into `out`, so a
    /// packer seals its blobs where they lie instead of copying each compressed body again.
    pub fn compress_into(&mut self, data: &[u8], out: &mut Vec<u8>) -> Compression {
        let start = out.len();
        if let Some(z) = self.zstd.as_mut() {
            let worth_trying =
                data.len() >= 64 && !self.probe.as_mut().is_some_and(|p| looks_random(p, data));
            if worth_trying {
                out.reserve(zstd::zstd_safe::compress_bound(data.len()));
                let mut tail = std::io::Cursor::new(&mut *out);
                tail.set_position(start as u64);
                match z.compress_to_buffer(data, &mut tail) {
                    Ok(n) if n < data.len() => return Compression::Zstd,
                    _ => out.truncate(start),
                }
            }
        }
        out.extend_from_slice(data);
        Compression::None
    }

    pub fn level(&self) -> i32 {
        self.level
    }
}

/// True when three samples of a large chunk (start, middle, end) each shrink by less than
/// 1/32 at zstd level 1: the chunk is then almost surely compressed or encrypted data, and
/// compressing it whole (at a higher level) would cost time for nothing. A chunk whose only
/// redundancy lies between far-apart regions is stored raw by mistake: larger, never wrong.
fn looks_random(probe: &mut zstd::bulk::Compressor<'static>, data: &[u8]) -> bool {
    if data.len() < PROBE_FROM {
        return false;
    }
    let mid = data.len() / 2 - PROBE_SAMPLE / 2;
    [0, mid, data.len() - PROBE_SAMPLE].iter().all(|&at| {
        let sample = &data[at..at + PROBE_SAMPLE];
        probe
            .compress(sample)
            .is_ok_and(|c| c.len() >= PROBE_SAMPLE - PROBE_SAMPLE / 32)
    })
}

/// Compresses `data` at `level` (0 disables); returns the raw bytes when zstd does not help.
pub fn compress(level: i32, data: &[u8]) -> (Compression, Vec<u8>) {
    let mut out = Vec::new();
    let c = Compressor::new(level).compress_into(data, &mut out);
    (c, out)
}

/// Reverses [`compress`]; `raw_len` is the exact expected size (from the pack header).
pub fn decompress(c: Compression, data: Vec<u8>, raw_len: usize) -> Result<Vec<u8>> {
    match c {
        Compression::None => Ok(data),
        Compression::Zstd => {
            let mut out = Vec::new();
            unzstd_into(&data, raw_len, &mut out)?;
            Ok(out)
        }
    }
}

/// Decompresses zstd `data` into `out` (emptied first, its capacity reused: a restore keeps
/// one buffer per thread); `raw_len` is the exact expected size: any other is an error (a
/// longer frame may fill the buffer's spare capacity first, never more).
pub fn unzstd_into(data: &[u8], raw_len: usize, out: &mut Vec<u8>) -> Result<()> {
    thread_local! {
        // One context per thread: creating one per chunk costs more than small chunks.
        static DCTX: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    out.clear();
    out.reserve(raw_len);
    DCTX.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new()?);
        }
        // Writes into the capacity only (never grows it): a longer frame fails or is caught
        // by the length check below.
        d.as_mut()
            .expect("just set")
            .decompress_to_buffer(data, out)
            .map(drop)
    })
    .map_err(|e| Error::invalid(format!("zstd: {e}")))?;
    if out.len() != raw_len {
        return Err(Error::invalid("decompressed length mismatch"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_shrinks_random_stays_raw() {
        let text = b"custody keeps ciphertext only. ".repeat(1000);
        let (c, z) = compress(3, &text);
        assert_eq!(c, Compression::Zstd);
        assert!(z.len() < text.len() / 10);
        assert_eq!(decompress(c, z, text.len()).unwrap(), text);

        let mut rnd = vec![0u8; 10_000];
        crate::crypto::random::fill(&mut rnd).unwrap();
        let (c, r) = compress(3, &rnd);
        assert_eq!(c, Compression::None);
        assert_eq!(r, rnd);
        assert_eq!(compress(0, &text).0, Compression::None);
    }

    /// The compressed body, or `None` where `data` would be stored raw.
    fn compressed(z: &mut Compressor, data: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        (z.compress_into(data, &mut out) == Compression::Zstd).then_some(out)
    }

    #[test]
    fn the_probe_skips_random_chunks_only() {
        let mut rnd = vec![0u8; 256 * 1024];
        crate::crypto::random::fill(&mut rnd).unwrap();
        let mut z = Compressor::new(3);
        assert!(compressed(&mut z, &rnd).is_none());
        // Text hidden between random samples is still found: the probe looks at three places.
        let mut mixed = rnd.clone();
        let mid = mixed.len() / 2;
        mixed[mid - 4096..mid + 4096].copy_from_slice(&b"compressible ".repeat(631)[..8192]);
        assert!(compressed(&mut z, &mixed).is_some_and(|c| c.len() < mixed.len()));
        // Text throughout, and chunks below the probe's size, compress as before.
        let text = b"custody keeps ciphertext only. ".repeat(10_000);
        assert!(compressed(&mut z, &text).is_some_and(|c| c.len() < text.len() / 10));
        let mut small = rnd[..60_000].to_vec();
        small[..30_000].fill(0);
        assert!(compressed(&mut z, &small).is_some());
    }

    #[test]
    fn compress_into_appends_after_what_is_there() {
        let mut z = Compressor::new(3);
        let text = b"custody keeps ciphertext only. ".repeat(1000);
        let mut rnd = vec![0u8; 100_000];
        crate::crypto::random::fill(&mut rnd).unwrap();
        let mut out = b"prefix".to_vec();
        assert_eq!(z.compress_into(&text, &mut out), Compression::Zstd);
        let zlen = out.len() - 6;
        assert!(zlen < text.len() / 10);
        assert_eq!(&out[..6], b"prefix");
        assert_eq!(
            decompress(Compression::Zstd, out[6..].to_vec(), text.len()).unwrap(),
            text
        );
        assert_eq!(z.compress_into(&rnd, &mut out), Compression::None);
        assert_eq!(&out[6 + zlen..], &rnd[..]);
        assert_eq!(
            Compressor::new(0).compress_into(&text, &mut out),
            Compression::None
        );
    }

    #[test]
    fn modes_pick_levels_and_parse() {
        assert_eq!(CompressionMode::default(), CompressionMode::Auto);
        assert_eq!("auto".parse::<CompressionMode>().unwrap().level(3), 3);
        assert_eq!("auto".parse::<CompressionMode>().unwrap().level(0), 0);
        assert_eq!("fast".parse::<CompressionMode>().unwrap().level(3), 1);
        assert_eq!("max".parse::<CompressionMode>().unwrap().level(3), 19);
        assert_eq!("off".parse::<CompressionMode>().unwrap().level(3), 0);
        let e = "best".parse::<CompressionMode>().unwrap_err().to_string();
        assert!(e.contains("auto, fast, max, off"), "{e}");
    }

    #[test]
    fn fail_wrong_length() {
        let text = b"abc".repeat(1000);
        let (c, z) = compress(3, &text);
        assert!(decompress(c, z.clone(), 10).is_err());
        assert!(decompress(c, z, 4000).is_err());
    }

    #[test]
    fn a_reused_buffer_holds_each_frame_alone() {
        let (long, short) = (b"abc".repeat(1000), b"xy".repeat(600));
        let (_, zl) = compress(3, &long);
        let (_, zs) = compress(3, &short);
        let mut out = Vec::new();
        unzstd_into(&zl, long.len(), &mut out).unwrap();
        assert_eq!(out, long);
        let room = out.capacity();
        unzstd_into(&zs, short.len(), &mut out).unwrap();
        assert_eq!(out, short);
        assert_eq!(out.capacity(), room, "the buffer is reused, not replaced");
        // The larger capacity left by the long frame does not let a short listing pass.
        assert!(unzstd_into(&zl, 10, &mut out).is_err());
        assert!(unzstd_into(&zl, long.len() + 1, &mut out).is_err());
    }
}
