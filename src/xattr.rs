//! Extended attributes (including POSIX ACLs, stored by Linux as `system.posix_acl_*`, and
//! file capabilities, `security.capability`): read without following links at backup, written
//! through a descriptor at restore. Thin wrappers over the `*xattr` system calls.

use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Every extended attribute of `path` (not following a symlink) that this process may read,
/// sorted by name. A file system without extended attributes gives none.
pub fn read(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    // The list may grow between the size query and the read: retry a few times.
    for _ in 0..4 {
        // SAFETY: a NUL-terminated path and a null buffer of size 0 (a size query).
        let n = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
        if n <= 0 {
            return Vec::new();
        }
        names.resize(n as usize, 0u8);
        // SAFETY: the buffer holds `names.len()` bytes.
        let got = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
        if got >= 0 {
            names.truncate(got as usize);
            break;
        }
        names.clear();
    }
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let Ok(cn) = CString::new(name) else { continue };
        if let Some(v) = get(&c, &cn) {
            out.push((name.to_vec(), v));
        }
    }
    out.sort();
    out
}

fn get(path: &CString, name: &CString) -> Option<Vec<u8>> {
    for _ in 0..4 {
        // SAFETY: NUL-terminated strings and a size query.
        let n = unsafe { libc::lgetxattr(path.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) };
        if n < 0 {
            return None;
        }
        let mut v = vec![0u8; n as usize];
        // SAFETY: the buffer holds `v.len()` bytes.
        let got = unsafe {
            libc::lgetxattr(path.as_ptr(), name.as_ptr(), v.as_mut_ptr().cast(), v.len())
        };
        if got >= 0 {
            v.truncate(got as usize);
            return Some(v);
        }
    }
    None
}

/// Sets one attribute on an open file or folder.
pub fn set(fd: &impl AsRawFd, name: &[u8], value: &[u8]) -> io::Result<()> {
    let n = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: a valid descriptor, a NUL-terminated name and a buffer of `value.len()` bytes.
    let r = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn user_attributes_round_trip() {
        let dir = std::env::temp_dir().join(format!("custody-xattr-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("f");
        std::fs::write(&f, b"x").unwrap();
        let file = std::fs::File::open(&f).unwrap();
        // Not every file system has user attributes (tmpfs before 6.6): then nothing to test.
        if super::set(&file, b"user.custody", b"v\0alue").is_ok() {
            let got = super::read(&f);
            assert!(
                got.contains(&(b"user.custody".to_vec(), b"v\0alue".to_vec())),
                "{got:?}"
            );
        }
        assert!(super::read(&dir.join("missing")).is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
