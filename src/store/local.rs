//! The embedded default: a local folder with the bucket's layout. Writes go to a temporary
//! file that is synced and renamed into place, so a crash never leaves a partial object. Pack
//! pages leave the page cache once written or read (see [`drop_cached`]).

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;

use super::{FileKind, Store};
use crate::error::{Error, Result};
use crate::id::Id;

#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    pub fn new(root: impl Into<PathBuf>) -> LocalStore {
        LocalStore { root: root.into() }
    }

    fn path(&self, kind: FileKind, id: &Id) -> PathBuf {
        self.root.join(kind.path(id))
    }
}

fn io_err(path: &Path, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        Error::NotFound(path.display().to_string())
    } else if e.kind() == std::io::ErrorKind::PermissionDenied {
        Error::StorageDenied(format!("{}: {e}", path.display()))
    } else {
        Error::io(path.display(), e)
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Unavailable(format!("local store task failed: {e}")))?
}

/// Writes `data` to `path` through a synced temporary file; with `uncache`, its pages leave the
/// page cache once synced (see [`drop_cached`]).
fn write_atomic(path: &Path, data: &[u8], uncache: bool) -> Result<()> {
    let dir = path.parent().expect("object paths have a parent");
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    let mut suffix = [0u8; 8];
    crate::crypto::random::fill(&mut suffix)?;
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("obj"),
        hex::encode(suffix)
    ));
    let res = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
        f.write_all(data).map_err(|e| io_err(&tmp, e))?;
        f.sync_all().map_err(|e| io_err(&tmp, e))?;
        if uncache {
            drop_cached(&f, 0, 0);
        }
        std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// Ranged reads of packs at least this long leave the page cache (see [`drop_cached`]).
const UNCACHE_FROM: u64 = 1 << 20;

/// Drops pages of an object (`length` 0: from `offset` to its end) from the page cache, once
/// written and synced (so they are clean), or once read. A backup writes hundreds of megabytes
/// it does not read back: cached, they would push out what the machine's own work has cached,
/// and each new pack would be copied into pages the kernel has to find and zero anew (on a
/// virtual machine that returns free memory to its host, at the cost of a host fault per page:
/// twice the system time of a first backup, measured). Pages just dropped are handed out again
/// for the next object instead. Only a hint: an error changes nothing.
#[cfg(target_os = "linux")]
fn drop_cached(f: &std::fs::File, offset: u64, length: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(length)) = (offset.try_into(), length.try_into()) else {
        return;
    };
    // SAFETY: a plain syscall on a descriptor `f` keeps open; it touches no memory of ours.
    unsafe {
        libc::posix_fadvise(f.as_raw_fd(), offset, length, libc::POSIX_FADV_DONTNEED);
    }
}
#[cfg(not(target_os = "linux"))]
fn drop_cached(_: &std::fs::File, _: u64, _: u64) {}

/// Whether `name` is a temporary name of [`write_atomic`]'s.
fn is_temporary(name: &std::ffi::OsStr) -> bool {
    name.as_encoded_bytes().starts_with(b".tmp-")
}

#[async_trait]
impl Store for LocalStore {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    async fn create(&self) -> Result<()> {
        let root = self.root.clone();
        blocking(move || {
            let cfg = root.join("config");
            if cfg.exists() {
                return Err(Error::AlreadyExists(format!(
                    "a repository at {}",
                    root.display()
                )));
            }
            // A repository holds no witness records (a witness is another store).
            for k in FileKind::ALL
                .into_iter()
                .filter(|k| *k != FileKind::Witness)
            {
                let d = root.join(k.dir());
                std::fs::create_dir_all(&d).map_err(|e| io_err(&d, e))?;
            }
            Ok(())
        })
        .await
    }

    async fn put(&self, kind: FileKind, id: &Id, data: Bytes) -> Result<()> {
        let path = self.path(kind, id);
        // Packs are the bulk of what a backup writes; the small records are read again soon.
        let uncache = kind == FileKind::Pack;
        blocking(move || write_atomic(&path, &data, uncache)).await
    }

    async fn get(&self, kind: FileKind, id: &Id) -> Result<Bytes> {
        let path = self.path(kind, id);
        blocking(move || {
            if kind != FileKind::Pack {
                return std::fs::read(&path)
                    .map(Bytes::from)
                    .map_err(|e| io_err(&path, e));
            }
            // Whole packs are read once each (check --read-data, repack, repair).
            let f = std::fs::File::open(&path).map_err(|e| io_err(&path, e))?;
            let len = f.metadata().map_err(|e| io_err(&path, e))?.len();
            let mut buf = Vec::new();
            // A failed reservation (a huge or sparse file) is an error, as in std::fs::read.
            usize::try_from(len)
                .ok()
                .and_then(|n| buf.try_reserve_exact(n).ok())
                .ok_or_else(|| io_err(&path, std::io::ErrorKind::OutOfMemory.into()))?;
            (&f).read_to_end(&mut buf).map_err(|e| io_err(&path, e))?;
            drop_cached(&f, 0, 0);
            Ok(Bytes::from(buf))
        })
        .await
    }

    async fn get_range_into(
        &self,
        kind: FileKind,
        id: &Id,
        offset: u64,
        length: u64,
        mut buf: Vec<u8>,
    ) -> Result<Vec<u8>> {
        let path = self.path(kind, id);
        blocking(move || {
            let mut f = std::fs::File::open(&path).map_err(|e| io_err(&path, e))?;
            let len = f.metadata().map_err(|e| io_err(&path, e))?.len();
            if offset.saturating_add(length) > len {
                return Err(Error::integrity(
                    path.display(),
                    format!("object shorter than requested range {offset}+{length}"),
                ));
            }
            f.seek(SeekFrom::Start(offset))
                .map_err(|e| io_err(&path, e))?;
            buf.clear();
            buf.reserve_exact(length as usize);
            // Reads into the capacity as it is (no zeroing first).
            let n = (&f)
                .take(length)
                .read_to_end(&mut buf)
                .map_err(|e| io_err(&path, e))?;
            // Restore reads a pack in a few large spans, most of them once; smaller reads (one
            // tree, one file's chunks) may be read again soon, and are not worth a system call.
            if kind == FileKind::Pack && length >= UNCACHE_FROM {
                drop_cached(&f, offset, length);
            }
            if n as u64 != length {
                return Err(Error::integrity(
                    path.display(),
                    format!("object shorter than requested range {offset}+{length}"),
                ));
            }
            Ok(buf)
        })
        .await
    }

    async fn size(&self, kind: FileKind, id: &Id) -> Result<u64> {
        let path = self.path(kind, id);
        blocking(move || {
            std::fs::metadata(&path)
                .map(|m| m.len())
                .map_err(|e| io_err(&path, e))
        })
        .await
    }

    async fn list(&self, kind: FileKind) -> Result<Vec<(Id, u64)>> {
        let root = self.root.join(kind.dir());
        blocking(move || {
            let mut out = Vec::new();
            let mut dirs = vec![root.clone()];
            while let Some(d) = dirs.pop() {
                let rd = match std::fs::read_dir(&d) {
                    Ok(rd) => rd,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_err(&d, e)),
                };
                for entry in rd {
                    let entry = entry.map_err(|e| io_err(&d, e))?;
                    let ft = entry.file_type().map_err(|e| io_err(&entry.path(), e))?;
                    let name = entry.file_name();
                    let name = name.to_string_lossy();
                    if ft.is_dir() && kind == FileKind::Pack && d == root {
                        dirs.push(entry.path());
                    } else if ft.is_file() {
                        if let Ok(id) = name.parse::<Id>() {
                            let len = entry
                                .metadata()
                                .map_err(|e| io_err(&entry.path(), e))?
                                .len();
                            out.push((id, len));
                        }
                    }
                }
            }
            out.sort();
            Ok(out)
        })
        .await
    }

    async fn delete(&self, kind: FileKind, id: &Id) -> Result<()> {
        let path = self.path(kind, id);
        blocking(move || match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&path, e)),
        })
        .await
    }

    async fn temporaries(&self, older: std::time::Duration) -> Result<Vec<(String, u64)>> {
        let root = self.root.clone();
        blocking(move || {
            let now = std::time::SystemTime::now();
            let mut out = Vec::new();
            // The repository's folders and their fan-out folders (`data/ab/`).
            let mut dirs = vec![root.clone()];
            while let Some(dir) = dirs.pop() {
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for e in entries.flatten() {
                    let Ok(meta) = e.metadata() else { continue };
                    if meta.is_dir() {
                        dirs.push(e.path());
                        continue;
                    }
                    let age = meta
                        .modified()
                        .ok()
                        .and_then(|m| now.duration_since(m).ok());
                    if is_temporary(&e.file_name()) && age.is_some_and(|a| a >= older) {
                        let name = e
                            .path()
                            .strip_prefix(&root)
                            .map(|p| p.display().to_string());
                        out.push((name.unwrap_or_default(), meta.len()));
                    }
                }
            }
            out.sort();
            Ok(out)
        })
        .await
    }

    async fn remove_temporary(&self, name: &str) -> Result<()> {
        let path = self.root.join(name);
        // Only a temporary name inside an object folder, never anything else.
        let inside = Path::new(name)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !inside || !path.file_name().is_some_and(is_temporary) {
            return Err(Error::invalid(format!("{name} is not a temporary file")));
        }
        blocking(move || match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(&path, e)),
            _ => Ok(()),
        })
        .await
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;

    /// How many of the file's pages are in the page cache.
    fn cached_pages(path: &Path) -> usize {
        let f = std::fs::File::open(path).unwrap();
        let len = f.metadata().unwrap().len() as usize;
        // SAFETY: a read-only shared mapping of a file nobody truncates meanwhile, only
        // inspected with mincore (never read), and unmapped before returning.
        unsafe {
            let page = libc::sysconf(libc::_SC_PAGESIZE) as usize;
            let map = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            );
            assert_ne!(map, libc::MAP_FAILED);
            let mut resident = vec![0u8; len.div_ceil(page)];
            assert_eq!(libc::mincore(map, len, resident.as_mut_ptr()), 0);
            libc::munmap(map, len);
            resident.iter().filter(|r| **r & 1 == 1).count()
        }
    }

    fn on_tmpfs(path: &Path) -> bool {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: statfs fills the struct it is given; `c` is a valid C string.
        unsafe {
            let mut s: libc::statfs = std::mem::zeroed();
            assert_eq!(libc::statfs(c.as_ptr(), &mut s), 0);
            // The field's type differs between C libraries (glibc, musl).
            #[allow(clippy::unnecessary_cast)]
            let tmpfs = s.f_type as i64 == libc::TMPFS_MAGIC as i64;
            tmpfs
        }
    }

    #[test]
    fn packs_leave_the_page_cache_other_objects_stay() {
        // tmpfs pages are the files themselves and cannot be dropped: the system's temporary
        // folder if it is on a disk, else one beside the sources.
        let dir = [std::env::temp_dir(), env!("CARGO_MANIFEST_DIR").into()]
            .into_iter()
            .find(|d| !on_tmpfs(d))
            .map(|d| tempfile::tempdir_in(d).unwrap());
        let Some(dir) = dir else {
            eprintln!("skipped: no folder here is on a file system with a page cache");
            return;
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let store = LocalStore::new(dir.path());
        let (pack, snap) = (Id::random().unwrap(), Id::random().unwrap());
        let data = Bytes::from(vec![7u8; 1 << 20]);
        rt.block_on(store.put(FileKind::Pack, &pack, data.clone()))
            .unwrap();
        rt.block_on(store.put(FileKind::Snapshot, &snap, data.clone()))
            .unwrap();
        let pack_path = store.path(FileKind::Pack, &pack);
        if cached_pages(&store.path(FileKind::Snapshot, &snap)) == 0 {
            eprintln!("skipped: this file system keeps no pages in the page cache (ZFS?)");
            return;
        }
        assert_eq!(cached_pages(&pack_path), 0, "a pack written stays cached");
        let cache_whole = || {
            assert_eq!(std::fs::read(&pack_path).unwrap(), data);
            assert!(cached_pages(&pack_path) > 0);
        };

        // A large ranged read drops what it read; a small one (one tree) keeps it.
        cache_whole();
        let got = rt
            .block_on(store.get_range_into(FileKind::Pack, &pack, 0, 1 << 20, Vec::new()))
            .unwrap();
        assert_eq!(got, data);
        assert_eq!(
            cached_pages(&pack_path),
            0,
            "a pack's span read stays cached"
        );
        cache_whole();
        rt.block_on(store.get_range_into(FileKind::Pack, &pack, 0, 4096, Vec::new()))
            .unwrap();
        assert!(cached_pages(&pack_path) > 0);
        // A whole pack read drops it.
        assert_eq!(rt.block_on(store.get(FileKind::Pack, &pack)).unwrap(), data);
        assert_eq!(
            cached_pages(&pack_path),
            0,
            "a pack read whole stays cached"
        );
    }
}
