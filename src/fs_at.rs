//! File-system calls relative to a folder descriptor (`openat`, `fstatat`, listing, removal),
//! none of which follows a symlink in the last part of a name: what restore and backup use
//! so that a folder swapped for a symlink while they work redirects nothing.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

pub fn cstr(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

pub fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `openat(dir, name, flags | O_NOFOLLOW | O_CLOEXEC)`, retried when interrupted.
pub fn openat(
    dir: &impl AsRawFd,
    name: &OsStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    let c = cstr(name)?;
    loop {
        // SAFETY: a valid descriptor and a NUL-terminated name; the result is checked.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                c.as_ptr(),
                flags | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                libc::c_uint::from(mode),
            )
        };
        if fd >= 0 {
            // SAFETY: a descriptor just returned to us and owned by nobody else.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Opens folder `name` in `dir` (a symlink or anything else there is an error).
pub fn open_dir(dir: &impl AsRawFd, name: &OsStr) -> io::Result<OwnedFd> {
    openat(dir, name, libc::O_RDONLY | libc::O_DIRECTORY, 0)
}

/// The status of `name` in `dir` itself (a symlink is not followed).
pub fn stat_at(dir: &impl AsRawFd, name: &OsStr) -> io::Result<libc::stat> {
    let c = cstr(name)?;
    // SAFETY: a zeroed stat is a valid out-parameter; fstatat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor, NUL-terminated name, valid out-pointer.
    check(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            c.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(st)
}

/// The names in folder `dir` (without `.` and `..`), in no order.
pub fn list(dir: &OwnedFd) -> io::Result<Vec<OsString>> {
    // A descriptor of its own (the stream closes it), read from the start.
    let own = openat(dir, OsStr::new("."), libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    let raw = own.into_raw_fd();
    // SAFETY: `raw` is an open folder descriptor that the stream takes over.
    let stream = unsafe { libc::fdopendir(raw) };
    if stream.is_null() {
        let e = io::Error::last_os_error();
        // SAFETY: fdopendir failed, so `raw` is still ours to close.
        unsafe { libc::close(raw) };
        return Err(e);
    }
    let mut out = Vec::new();
    let result = loop {
        // SAFETY: errno is thread-local; cleared so that the end of the stream is told apart
        // from an error.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: a valid stream, used by this thread only.
        let entry = unsafe { libc::readdir(stream) };
        if entry.is_null() {
            let e = io::Error::last_os_error();
            break if e.raw_os_error() == Some(0) {
                Ok(())
            } else {
                Err(e)
            };
        }
        // SAFETY: readdir returned a valid entry whose name is NUL-terminated.
        let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) }.to_bytes();
        if name != b"." && name != b".." {
            out.push(OsString::from_vec(name.to_vec()));
        }
    };
    // SAFETY: the stream is valid and closed once.
    unsafe { libc::closedir(stream) };
    result.map(|()| out)
}

/// Removes `name` in `dir` and, if it is a folder, everything in it, through descriptors
/// only (a symlink is removed itself, never followed). Returns how many entries went.
pub fn remove_all(dir: &OwnedFd, name: &OsStr) -> io::Result<u64> {
    let c = cstr(name)?;
    // SAFETY: valid descriptor and NUL-terminated name; removes the entry itself.
    if unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) } == 0 {
        return Ok(1);
    }
    let e = io::Error::last_os_error();
    if !matches!(e.raw_os_error(), Some(libc::EISDIR) | Some(libc::EPERM)) {
        return Err(e);
    }
    let sub = open_dir(dir, name)?;
    let mut removed = 0;
    for n in list(&sub)? {
        removed += remove_all(&sub, &n)?;
    }
    drop(sub);
    // SAFETY: as above.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), libc::AT_REMOVEDIR) })?;
    Ok(removed + 1)
}

/// The status of `path` itself (a symlink in its last part is not followed).
pub fn lstat(path: &std::path::Path) -> io::Result<libc::stat> {
    let c = cstr(path.as_os_str())?;
    // SAFETY: a zeroed stat is a valid out-parameter; lstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a valid out-pointer.
    check(unsafe { libc::lstat(c.as_ptr(), &mut st) })?;
    Ok(st)
}

/// A file's status as `fstatat` gives it, with the accessors of `std`'s `MetadataExt`
/// (`std::fs::Metadata` cannot be made from a descriptor-relative call).
#[derive(Clone, Copy)]
pub struct Stat(pub libc::stat);

impl std::fmt::Debug for Stat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Stat(dev {}, ino {}, mode {:o})",
            self.dev(),
            self.ino(),
            self.0.st_mode
        )
    }
}

impl Stat {
    /// `name` in `dir` itself (not following a symlink).
    pub fn at(dir: &impl AsRawFd, name: &OsStr) -> io::Result<Stat> {
        stat_at(dir, name).map(Stat)
    }

    /// `path` itself (not following a symlink in its last part).
    pub fn of_path(path: &std::path::Path) -> io::Result<Stat> {
        lstat(path).map(Stat)
    }

    /// An open file or folder.
    pub fn of_fd(fd: &impl AsRawFd) -> io::Result<Stat> {
        // SAFETY: a zeroed stat is a valid out-parameter; fstat fills it.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: a valid descriptor and out-pointer.
        check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
        Ok(Stat(st))
    }

    fn kind(&self) -> libc::mode_t {
        self.0.st_mode & libc::S_IFMT
    }
    pub fn is_file(&self) -> bool {
        self.kind() == libc::S_IFREG
    }
    pub fn is_dir(&self) -> bool {
        self.kind() == libc::S_IFDIR
    }
    pub fn is_symlink(&self) -> bool {
        self.kind() == libc::S_IFLNK
    }
    pub fn is_fifo(&self) -> bool {
        self.kind() == libc::S_IFIFO
    }
    pub fn is_char_device(&self) -> bool {
        self.kind() == libc::S_IFCHR
    }
    pub fn is_block_device(&self) -> bool {
        self.kind() == libc::S_IFBLK
    }
    pub fn mode(&self) -> u32 {
        self.0.st_mode
    }
    pub fn uid(&self) -> u32 {
        self.0.st_uid
    }
    pub fn gid(&self) -> u32 {
        self.0.st_gid
    }
    pub fn len(&self) -> u64 {
        self.0.st_size as u64
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn nlink(&self) -> u64 {
        self.0.st_nlink
    }
    pub fn dev(&self) -> u64 {
        self.0.st_dev
    }
    pub fn ino(&self) -> u64 {
        self.0.st_ino
    }
    pub fn rdev(&self) -> u64 {
        self.0.st_rdev
    }
    pub fn mtime(&self) -> i64 {
        self.0.st_mtime
    }
    pub fn mtime_nsec(&self) -> i64 {
        self.0.st_mtime_nsec
    }
    pub fn ctime(&self) -> i64 {
        self.0.st_ctime
    }
    pub fn ctime_nsec(&self) -> i64 {
        self.0.st_ctime_nsec
    }
}

/// The target of symlink `name` in `dir`.
pub fn readlink_at(dir: &impl AsRawFd, name: &OsStr) -> io::Result<OsString> {
    let c = cstr(name)?;
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: valid descriptor, NUL-terminated name, and a buffer of `buf.len()` bytes.
        let n = unsafe {
            libc::readlinkat(
                dir.as_raw_fd(),
                c.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if (n as usize) < buf.len() {
            buf.truncate(n as usize);
            return Ok(OsString::from_vec(buf));
        }
        buf.resize(buf.len() * 4, 0);
    }
}

/// A path that reaches `name` in the folder open as `dir` without walking the folder's own
/// path again (`/proc/self/fd/N/name`), for calls that take only paths (the `l*xattr`
/// family); `fallback` where `/proc` is not mounted.
pub fn proc_path(
    dir: &impl AsRawFd,
    name: &OsStr,
    fallback: &std::path::Path,
) -> std::path::PathBuf {
    static PROC: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *PROC.get_or_init(|| std::path::Path::new("/proc/self/fd").is_dir()) {
        std::path::Path::new(&format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name)
    } else {
        fallback.to_path_buf()
    }
}
