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
