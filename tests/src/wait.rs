//! Waiting on conditions. A deadline bounds every wait; the poll interval
//! only decides how soon a met condition is noticed.

use std::time::{Duration, Instant};

/// Polls `check` until it returns `Some`, or panics with `what` after
/// `timeout`.
pub fn until<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}
