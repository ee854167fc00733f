//! A progress display driven by polling counters, so pipelines never wait on the terminal.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// Runs `work` while a spinner shows `status()` every 100 ms (only when `show`).
pub fn with_progress<T>(
    show: bool,
    status: impl Fn() -> String + Sync,
    work: impl FnOnce() -> T,
) -> T {
    if !show {
        return work();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
            .expect("valid template"),
    );
    let stop = AtomicBool::new(false);
    let r = std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                bar.set_message(status());
                bar.tick();
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        // Stops the spinner even when `work` panics, so the scope can end.
        struct Stop<'a>(&'a AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _stop = Stop(&stop);
        work()
    });
    bar.finish_and_clear();
    r
}
