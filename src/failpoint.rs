//! Crash points for tests: when `CUSTODY_FAILPOINT` names a point, the process kills itself
//! there with SIGKILL, the way a scheduler or the OOM killer would, so crash-safety tests hit
//! the exact moments that matter (between a write and the next) in the real binary.
//! Unset (always, outside tests), a point costs one environment lookup.

/// Kills the process with SIGKILL when `CUSTODY_FAILPOINT` equals `name`.
pub fn hit(name: &str) {
    if std::env::var_os("CUSTODY_FAILPOINT").is_some_and(|v| v == name) {
        tracing::warn!(point = name, "failpoint: killing this process");
        // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}
