//! Many independent reads at once: a remote bucket answers each small object after a round
//! trip, so reading them one after another costs a round trip each.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::error::{Error, Result};

/// Reads in flight at once: enough to hide round trips, few enough for any server.
pub const IN_FLIGHT: usize = 8;

/// Objects read before they are used, when they are used one by one in listing order.
pub const WINDOW: usize = 4 * IN_FLIGHT;

/// Runs `a` on a thread of its own while `b` runs on this one: two independent reads cost one
/// round trip, not two.
pub fn join<A: Send, B: Send>(a: impl FnOnce() -> A + Send, b: impl FnOnce() -> B) -> (A, B) {
    std::thread::scope(|s| {
        let a = s.spawn(a);
        let b = b();
        (a.join().unwrap_or_else(|p| std::panic::resume_unwind(p)), b)
    })
}

/// `read` applied to every item on up to [`IN_FLIGHT`] threads; results come in the order of
/// `items`. A failure other than a missing, damaged or untrusted object (the key service or
/// the store unavailable, a refusal) stops handing out items, as the first failure stopped a
/// loop: items after it may then be left unread (an internal error in their place, never
/// before the failure in order), so an unreachable key service is asked about once, not once
/// per item.
pub fn read_all<T: Sync, R: Send>(
    items: &[T],
    read: impl Fn(&T) -> Result<R> + Sync,
) -> Vec<Result<R>> {
    read_all_at(IN_FLIGHT, items, read)
}

/// [`read_all`] with `in_flight` reads at once: more for objects that are small and whose
/// results are kept anyway (the history's manifests and key records).
pub fn read_all_at<T: Sync, R: Send>(
    in_flight: usize,
    items: &[T],
    read: impl Fn(&T) -> Result<R> + Sync,
) -> Vec<Result<R>> {
    if items.len() <= 1 {
        return items.iter().map(&read).collect();
    }
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let out: Vec<Mutex<Option<Result<R>>>> = items.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..in_flight.clamp(1, items.len()) {
            s.spawn(|| loop {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::AcqRel);
                let Some(item) = items.get(i) else { break };
                let r = read(item);
                if matches!(&r, Err(e) if !(matches!(e, Error::NotFound(_)) || e.is_integrity() || e.is_untrusted()))
                {
                    stop.store(true, Ordering::Release);
                }
                *out[i].lock().expect("lock") = Some(r);
            });
        }
    });
    out.into_iter()
        .map(|m| {
            m.into_inner()
                .expect("lock")
                .unwrap_or_else(|| Err(Error::Internal("reader stopped".into())))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unavailable_service_stops_the_reads() {
        let items: Vec<u64> = (0..1000).collect();
        let asked = AtomicUsize::new(0);
        let out = read_all(&items, |&i| {
            asked.fetch_add(1, Ordering::Relaxed);
            if i >= 10 {
                Err(Error::Unavailable("key service down".into()))
            } else {
                Ok(i)
            }
        });
        assert!(asked.load(Ordering::Relaxed) < 10 + 2 * IN_FLIGHT);
        let first_err = out.iter().position(Result::is_err).unwrap();
        assert_eq!(first_err, 10);
        assert!(out[10].as_ref().unwrap_err().to_string().contains("down"));
    }

    #[test]
    fn results_keep_the_order_of_the_items() {
        let items: Vec<u64> = (0..100).collect();
        let out = read_all(&items, |&i| {
            std::thread::sleep(std::time::Duration::from_micros((100 - i) * 10));
            if i == 7 {
                // Damage is reported in its place and does not stop the others.
                Err(Error::integrity("item 7", "seven"))
            } else {
                Ok(i * 2)
            }
        });
        for (i, r) in out.into_iter().enumerate() {
            match r {
                Ok(v) => assert_eq!(v, i as u64 * 2),
                Err(e) => assert!(i == 7 && e.to_string().contains("seven")),
            }
        }
    }
}
