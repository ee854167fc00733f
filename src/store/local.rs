//! The embedded default: a local folder with the bucket's layout. Writes go to a temporary
//! file that is synced and renamed into place, so a crash never leaves a partial object.

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

fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
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
        blocking(move || write_atomic(&path, &data)).await
    }

    async fn get(&self, kind: FileKind, id: &Id) -> Result<Bytes> {
        let path = self.path(kind, id);
        blocking(move || {
            std::fs::read(&path)
                .map(Bytes::from)
                .map_err(|e| io_err(&path, e))
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
            let n = f
                .take(length)
                .read_to_end(&mut buf)
                .map_err(|e| io_err(&path, e))?;
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
