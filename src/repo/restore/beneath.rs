//! File-system calls confined to the restore target: every folder on the way is opened with
//! `openat(O_DIRECTORY | O_NOFOLLOW)` from its parent's descriptor, opened the same way from
//! the target's own (a descriptor names the folder it opened, also if that is moved), and
//! every change is made relative to a folder descriptor (`mkdirat`, `openat(O_NOFOLLOW)`,
//! `renameat`, `symlinkat`, `fchmod`, `futimens`). A local user who swaps a folder inside the target for a
//! symlink mid-restore therefore redirects nothing: the swapped part is refused, never
//! followed.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::format::tree::{Node, NodeKind};
use crate::fs_at::{check, cstr, openat};

fn current_uid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// The restore target, opened once, and what this process may restore there.
#[derive(Debug)]
pub(super) struct Beneath {
    root: OwnedFd,
    path: PathBuf,
    /// Root restores owners, setuid/setgid bits, devices and every attribute.
    as_root: bool,
    /// What could not be restored, counted once for the summary.
    pub(super) lost: Lost,
    /// Folders opened lately: the files of one folder are restored together, and walking
    /// every part of the path again for each call was most of a small file's system calls.
    open_dirs: RwLock<OpenDirs>,
    /// This run's mark in temporary names: its own files are never swept as leftovers (a
    /// batch writes them while the walk meets folders, and two snapshot folders may be one
    /// folder on a file system that folds case).
    run: String,
}

/// The last [`OpenDirs::CAPACITY`] folders opened, by path under the target. A descriptor
/// names the folder that was opened, never following a link, for as long as it is held; an
/// entry goes when a folder is removed.
#[derive(Debug, Default)]
struct OpenDirs {
    by_path: std::collections::HashMap<PathBuf, Arc<OwnedFd>>,
    order: std::collections::VecDeque<PathBuf>,
}

impl OpenDirs {
    /// Two batches at once keep a few hundred folders busy in a tree of small files: each
    /// thread meets its batch's folders in pack order, not folder by folder. (The binary
    /// raises its open-files limit to the hard one, so these and `--threads` fit.)
    const CAPACITY: usize = 256;

    fn insert(&mut self, rel: &Path, fd: Arc<OwnedFd>) {
        if self.by_path.insert(rel.to_path_buf(), fd).is_none() {
            self.order.push_back(rel.to_path_buf());
        }
        while self.order.len() > Self::CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.by_path.remove(&old);
            }
        }
    }
}

/// What a restore could not reproduce (as another user than root, or on a file system that
/// refuses an attribute).
#[derive(Debug, Default)]
pub(super) struct Lost {
    pub(super) owners: AtomicU64,
    pub(super) special_bits: AtomicU64,
    pub(super) devices: AtomicU64,
    pub(super) xattrs: AtomicU64,
    /// Not a loss: temporary files of an interrupted restore removed.
    pub(super) leftovers: AtomicU64,
}

/// Whether `name` is a temporary name of another restore run's
/// (`.NAME.custody-<12 hex>-<digits>`, the hex not `run`'s).
fn is_leftover(name: &[u8], run: &str) -> bool {
    const MARK: &[u8] = b".custody-";
    let Some(at) = name.windows(MARK.len()).rposition(|w| w == MARK) else {
        return false;
    };
    let tail = &name[at + MARK.len()..];
    name.first() == Some(&b'.')
        && at > 0
        && tail.len() > 13
        && tail[..12].iter().all(u8::is_ascii_hexdigit)
        && &tail[..12] != run.as_bytes()
        && tail[12] == b'-'
        && tail[13..].iter().all(u8::is_ascii_digit)
}

impl Beneath {
    /// Opens the target folder (created first by the caller; a symlink given as the target
    /// itself is the user's choice and is followed).
    pub(super) fn open(path: &Path, run: &str) -> io::Result<Beneath> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags_dir()
            .open(path)?;
        Ok(Beneath {
            root: OwnedFd::from(f),
            path: path.to_path_buf(),
            // SAFETY: geteuid has no preconditions.
            as_root: unsafe { libc::geteuid() } == 0,
            lost: Lost::default(),
            open_dirs: RwLock::default(),
            run: run.to_string(),
        })
    }

    /// The permission bits to set: all of them as root (owners are restored too); without
    /// setuid and setgid otherwise, since a file of another user made setuid by whoever
    /// restores would run as them.
    fn mode(&self, node: &Node) -> u32 {
        if self.as_root {
            node.mode & 0o7777
        } else {
            if node.mode & 0o6000 != 0 {
                self.lost.special_bits.fetch_add(1, Ordering::Relaxed);
            }
            node.mode & 0o1777
        }
    }

    /// Owner, extended attributes and mode of an open file or folder, in that order (a
    /// change of owner clears setuid bits and file capabilities).
    pub(super) fn apply(&self, fd: &impl AsRawFd, node: &Node) -> io::Result<()> {
        if self.as_root {
            // SAFETY: a valid descriptor.
            check(unsafe { libc::fchown(fd.as_raw_fd(), node.uid, node.gid) })?;
        } else if node.uid != current_uid() {
            self.lost.owners.fetch_add(1, Ordering::Relaxed);
        }
        for x in &node.xattrs {
            if crate::xattr::set(fd, &x.name.0, &x.value).is_err() {
                self.lost.xattrs.fetch_add(1, Ordering::Relaxed);
            }
        }
        // SAFETY: a valid descriptor.
        check(unsafe { libc::fchmod(fd.as_raw_fd(), self.mode(node) as libc::mode_t) })
    }

    /// Creates a fifo or (as root) a device `node` in `parent`, with its owner, mode and times.
    pub(super) fn special(&self, parent: &Path, node: &Node) -> io::Result<()> {
        let kind = match node.kind {
            NodeKind::Fifo => libc::S_IFIFO,
            NodeKind::CharDevice => libc::S_IFCHR,
            NodeKind::BlockDevice => libc::S_IFBLK,
            _ => return Err(io::Error::from(io::ErrorKind::InvalidInput)),
        };
        if kind != libc::S_IFIFO && !self.as_root {
            self.lost.devices.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let dir = self.dir(parent)?;
        let c = cstr(node.name.as_os())?;
        if !self.is_dir(&dir, &c).unwrap_or(false) {
            // SAFETY: valid descriptor and NUL-terminated name (a missing entry is fine).
            let _ = unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) };
        }
        // SAFETY: valid descriptor and name; mode and device number as the kernel takes them.
        check(unsafe {
            libc::mknodat(
                dir.as_raw_fd(),
                c.as_ptr(),
                kind | 0o600,
                node.rdev as libc::dev_t,
            )
        })?;
        if self.as_root {
            // SAFETY: valid descriptor and name; does not follow a link.
            check(unsafe {
                libc::fchownat(
                    dir.as_raw_fd(),
                    c.as_ptr(),
                    node.uid,
                    node.gid,
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            })?;
        }
        // fchmodat cannot refuse to follow a link on Linux; the entry was made just now in a
        // folder this restore made private (mode 0700 until its end).
        // SAFETY: valid descriptor and name.
        check(unsafe {
            libc::fchmodat(
                dir.as_raw_fd(),
                c.as_ptr(),
                self.mode(node) as libc::mode_t,
                0,
            )
        })?;
        let t = timespec(node.mtime_sec, node.mtime_nsec);
        let times = [t, t];
        // SAFETY: valid descriptor, name and a two-element times array.
        check(unsafe {
            libc::utimensat(
                dir.as_raw_fd(),
                c.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })
    }

    /// This run's mark in temporary names.
    pub(super) fn run(&self) -> &str {
        &self.run
    }

    /// The absolute path of `rel`, for messages.
    pub(super) fn shown(&self, rel: &Path) -> PathBuf {
        self.path.join(rel)
    }

    /// The folder `rel` (relative to the target), every part a real folder: a symlink or
    /// anything else in the way is an error, never followed. Recently opened folders are
    /// reused.
    pub(super) fn dir(&self, rel: &Path) -> io::Result<Arc<OwnedFd>> {
        if let Some(fd) = self.open_dirs.read().expect("lock").by_path.get(rel) {
            return Ok(fd.clone());
        }
        // Opened from its parent, itself most often still open (its other entries were met
        // lately), so that a folder not open costs one `openat`, not one per part of its path.
        let fd = Arc::new(match (rel.parent(), rel.file_name()) {
            (Some(parent), Some(name)) => openat(
                &*self.dir(parent)?,
                name,
                libc::O_RDONLY | libc::O_DIRECTORY,
                0,
            )?,
            // The target itself; any other path without a last name ends in `..` or is absolute.
            _ if rel.components().all(|c| c == Component::CurDir) => self.root.try_clone()?,
            _ => return Err(io::Error::from(io::ErrorKind::InvalidInput)),
        });
        self.open_dirs
            .write()
            .expect("lock")
            .insert(rel, fd.clone());
        Ok(fd)
    }

    /// Forgets every open folder: called before folders are removed.
    fn forget_dirs(&self) {
        *self.open_dirs.write().expect("lock") = OpenDirs::default();
    }

    /// Creates folder `name` in `parent`; an existing folder is kept, anything else in its
    /// place (a file, a symlink) is removed first. Whether it was created.
    pub(super) fn mkdir(&self, parent: &Path, name: &OsStr) -> io::Result<bool> {
        let dir = self.dir(parent)?;
        let c = cstr(name)?;
        // SAFETY: valid descriptor and NUL-terminated name.
        let r = unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), 0o700) };
        if r == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::AlreadyExists {
            return Err(e);
        }
        if self.is_dir(&dir, &c)? {
            // A folder from an earlier restore: what an interrupted one left behind goes.
            self.sweep(&parent.join(name));
            return Ok(false);
        }
        // SAFETY: as above; removes the link or file itself, never what it points to.
        check(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) })?;
        // SAFETY: as above.
        check(unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), 0o700) })?;
        Ok(true)
    }

    /// What is at `name` in `parent` now (not following a symlink); `None` if nothing.
    pub(super) fn existing(&self, parent: &Path, name: &OsStr) -> io::Result<Option<libc::stat>> {
        match crate::fs_at::stat_at(&self.dir(parent)?, name) {
            Ok(st) => Ok(Some(st)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The names in folder `rel`, listed through its descriptor.
    pub(super) fn list(&self, rel: &Path) -> io::Result<Vec<std::ffi::OsString>> {
        crate::fs_at::list(&*self.dir(rel)?)
    }

    /// Removes `name` in `parent` and all it holds (`--delete`); how many entries went.
    pub(super) fn remove_all(&self, parent: &Path, name: &OsStr) -> io::Result<u64> {
        self.forget_dirs();
        crate::fs_at::remove_all(&*self.dir(parent)?, name)
    }

    /// Removes folder `rel` if it is empty (a folder made only to reach paths that matched
    /// nothing); whether it went.
    pub(super) fn remove_if_empty(&self, rel: &Path) -> bool {
        self.forget_dirs();
        let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
            return false;
        };
        let (Ok(dir), Ok(c)) = (self.dir(parent), cstr(name)) else {
            return false;
        };
        // SAFETY: valid descriptor and NUL-terminated name; fails unless an empty folder.
        unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), libc::AT_REMOVEDIR) == 0 }
    }

    /// Opens file `name` in `parent` for reading (`--verify`), never through a link.
    pub(super) fn open_read(&self, parent: &Path, name: &OsStr) -> io::Result<File> {
        let dir = self.dir(parent)?;
        Ok(File::from(openat(&dir, name, libc::O_RDONLY, 0)?))
    }

    /// Removes the temporary files an interrupted restore left in folder `rel` (names made by
    /// `temp_name`: `.NAME.custody-<12 hex>-<n>`), never following anything.
    pub(super) fn sweep(&self, rel: &Path) {
        let Ok(dir) = self.dir(rel) else { return };
        let Ok(entries) = crate::fs_at::list(&dir) else {
            return;
        };
        for name in entries {
            if !is_leftover(name.as_bytes(), &self.run) {
                continue;
            }
            let Ok(c) = cstr(&name) else { continue };
            // SAFETY: valid descriptor and NUL-terminated name; removes the entry itself.
            if unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) } == 0 {
                self.lost.leftovers.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn is_dir(&self, dir: &OwnedFd, name: &CString) -> io::Result<bool> {
        let name = OsStr::from_bytes(name.as_bytes());
        let st = crate::fs_at::stat_at(dir, name)?;
        Ok(st.st_mode & libc::S_IFMT == libc::S_IFDIR)
    }

    /// Creates file `name` in `parent` (never an existing one, never through a link).
    pub(super) fn create(&self, parent: &Path, name: &OsStr) -> io::Result<File> {
        let dir = self.dir(parent)?;
        let fd = openat(
            &dir,
            name,
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
            0o600,
        )?;
        Ok(File::from(fd))
    }

    /// Opens existing file `name` in `parent` for writing (not through a link).
    pub(super) fn reopen(&self, parent: &Path, name: &OsStr) -> io::Result<File> {
        let dir = self.dir(parent)?;
        Ok(File::from(openat(&dir, name, libc::O_WRONLY, 0)?))
    }

    /// Renames `from` to `to`, both in `parent`.
    pub(super) fn rename(&self, parent: &Path, from: &OsStr, to: &OsStr) -> io::Result<()> {
        let dir = self.dir(parent)?;
        let (a, b) = (cstr(from)?, cstr(to)?);
        // SAFETY: valid descriptors and NUL-terminated names.
        check(unsafe { libc::renameat(dir.as_raw_fd(), a.as_ptr(), dir.as_raw_fd(), b.as_ptr()) })
    }

    /// Makes `name` in `parent` another name of the file `first` in `first_parent` (both
    /// under the target; whatever file or link was at `name` is replaced).
    pub(super) fn hard_link(
        &self,
        first_parent: &Path,
        first: &OsStr,
        parent: &Path,
        name: &OsStr,
    ) -> io::Result<()> {
        let (from, to) = (self.dir(first_parent)?, self.dir(parent)?);
        let (a, b) = (cstr(first)?, cstr(name)?);
        if !self.is_dir(&to, &b).unwrap_or(false) {
            // SAFETY: valid descriptor and NUL-terminated name (a missing entry is fine).
            let _ = unsafe { libc::unlinkat(to.as_raw_fd(), b.as_ptr(), 0) };
        }
        // SAFETY: valid descriptors and names; flags 0 does not follow a symlink at `first`.
        check(unsafe { libc::linkat(from.as_raw_fd(), a.as_ptr(), to.as_raw_fd(), b.as_ptr(), 0) })
    }

    /// Removes file or link `name` in `parent` (not a folder); a missing one is fine.
    pub(super) fn unlink(&self, parent: &Path, name: &OsStr) -> io::Result<()> {
        let dir = self.dir(parent)?;
        let c = cstr(name)?;
        // SAFETY: valid descriptor and NUL-terminated name.
        match check(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) }) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }

    /// Creates symlink `name` in `parent` pointing at `target` (whatever was there, if not a
    /// folder, is replaced), with its times.
    pub(super) fn symlink(
        &self,
        parent: &Path,
        name: &OsStr,
        target: &OsStr,
        time: libc::timespec,
        owner: Option<(u32, u32)>,
    ) -> io::Result<()> {
        let dir = self.dir(parent)?;
        let (c, t) = (cstr(name)?, cstr(target)?);
        // SAFETY: valid descriptor and NUL-terminated names.
        let r = unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), c.as_ptr()) };
        if r != 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::AlreadyExists {
                return Err(e);
            }
            // SAFETY: as above; removes the entry itself, never what a link points to.
            check(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) })?;
            // SAFETY: as above.
            check(unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), c.as_ptr()) })?;
        }
        let times = [time, time];
        // SAFETY: valid descriptor, name and a two-element times array.
        let _ = unsafe {
            libc::utimensat(
                dir.as_raw_fd(),
                c.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if let (true, Some((uid, gid))) = (self.as_root, owner) {
            // SAFETY: valid descriptor and name; does not follow the link.
            check(unsafe {
                libc::fchownat(
                    dir.as_raw_fd(),
                    c.as_ptr(),
                    uid,
                    gid,
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            })?;
        }
        Ok(())
    }

    /// Sets the owner, attributes, mode and times of folder `rel` through its own descriptor.
    pub(super) fn finish_dir(&self, rel: &Path, node: &Node) -> io::Result<()> {
        let dir = self.dir(rel)?;
        self.apply(&dir, node)?;
        // A folder above the sources has no recorded time (docs/FORMAT.md §8): left as found.
        if node.mtime_sec == 0 && node.mtime_nsec == 0 {
            return Ok(());
        }
        let time = timespec(node.mtime_sec, node.mtime_nsec);
        let times = [time, time];
        // SAFETY: a valid descriptor and a two-element times array.
        check(unsafe { libc::futimens(dir.as_raw_fd(), times.as_ptr()) })
    }
}

impl Lost {
    /// One line per kind of loss, for the restore's summary.
    pub(super) fn summary(&self) -> Vec<String> {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = Vec::new();
        if n(&self.owners) > 0 {
            out.push(format!(
                "owners of {} entries (restoring as root restores them)",
                n(&self.owners)
            ));
        }
        if n(&self.special_bits) > 0 {
            out.push(format!(
                "setuid/setgid bits of {} files (dropped: owners are not restored)",
                n(&self.special_bits)
            ));
        }
        if n(&self.devices) > 0 {
            out.push(format!(
                "{} devices (only root can make them)",
                n(&self.devices)
            ));
        }
        if n(&self.xattrs) > 0 {
            out.push(format!(
                "{} extended attributes (refused by the file system, or need root)",
                n(&self.xattrs)
            ));
        }
        out
    }
}

/// `O_DIRECTORY` for opening the target itself.
trait DirFlags {
    fn custom_flags_dir(&mut self) -> &mut Self;
}

impl DirFlags for std::fs::OpenOptions {
    fn custom_flags_dir(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_DIRECTORY)
    }
}

/// A snapshot time as `futimens` takes it.
pub(super) fn timespec(sec: i64, nsec: u32) -> libc::timespec {
    libc::timespec {
        tv_sec: sec as libc::time_t,
        tv_nsec: nsec as libc::c_long,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_restores_own_temporary_names_are_leftovers() {
        let run = "ba9876543210";
        assert!(super::is_leftover(b".a.txt.custody-0123456789ab-7", run));
        assert!(super::is_leftover(b"..custody-0123456789ab-0", run));
        for name in [
            // This run's own: a batch may be writing it.
            &b".a.txt.custody-ba9876543210-7"[..],
            b"a.txt.custody-0123456789ab-7",
            b".a.txt.custody-0123456789ab-",
            b".a.txt.custody-0123456789zz-7",
            b".a.txt.custody-notours",
            b".custody-0123456789ab-7",
        ] {
            assert!(
                !super::is_leftover(name, run),
                "{}",
                String::from_utf8_lossy(name)
            );
        }
    }
}
