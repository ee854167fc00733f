//! Crash points for tests: when armed with a point's name (the binary arms it from
//! `CUSTODY_FAILPOINT` at start-up), the process kills itself there with SIGKILL, the way a
//! scheduler or the OOM killer would, so crash-safety tests hit the exact moments that matter
//! (between a write and the next) in the real binary. Unarmed (always, outside tests), a
//! point costs one load.

use std::sync::OnceLock;

static ARMED: OnceLock<String> = OnceLock::new();

/// Arms the point `name` for the rest of the process (the first call wins).
pub fn arm(name: String) {
    let _ = ARMED.set(name);
}

/// Kills the process with SIGKILL when the armed point is `name`.
pub fn hit(name: &str) {
    if ARMED.get().is_some_and(|v| v == name) {
        tracing::warn!(point = name, "failpoint: killing this process");
        // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}
