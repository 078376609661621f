//! Child processes that are stopped (SIGTERM, then SIGKILL) when dropped,
//! so a failing test leaves nothing running.

use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// A running child process, stopped on drop.
#[derive(Debug)]
pub struct Guard {
    name: String,
    child: Option<Child>,
}

impl Guard {
    /// Wraps a spawned child.
    pub fn new(name: &str, child: Child) -> Guard {
        Guard { name: name.to_string(), child: Some(child) }
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Mutable access to the child (for its pipes).
    pub fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("child is running")
    }

    /// Stops it gracefully (SIGTERM), waiting up to `grace`, then kills it.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!("{} did not stop within {grace:?}; killing it", self.name);
        let _ = child.kill();
        child.wait().ok()
    }

    /// Sends it a signal by name (`STOP`, `CONT`, `KILL`...), through the
    /// `kill` command. The child stays owned: a `KILL` is reaped by
    /// [`Guard::kill`] or on drop.
    pub fn signal(&self, signal: &str) {
        let Some(child) = &self.child else {
            return;
        };
        let status = Command::new("kill")
            .arg("-s")
            .arg(signal)
            .arg(child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s {signal} {} failed", child.id());
    }

    /// Kills it at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}
