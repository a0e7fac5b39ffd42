//! SIGINT/SIGTERM become a flag that every loop checks, and sleeps that wake up when it is set.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Exit code when a second signal forces an immediate stop.
const FORCED_EXIT_CODE: i32 = 130;

/// Set once a stop was requested.
#[derive(Clone, Default)]
pub struct Shutdown {
    requested: Arc<AtomicBool>,
}

impl Shutdown {
    /// Installs the SIGINT/SIGTERM handler. The first signal asks loops to finish what they
    /// hold; a second one exits at once (the pipeline stays consistent even after `kill -9`).
    pub fn install() -> Result<Shutdown, String> {
        let shutdown = Shutdown::default();
        let flag = shutdown.requested.clone();
        ctrlc::set_handler(move || {
            if flag.swap(true, Ordering::SeqCst) {
                eprintln!("second stop signal: exiting now");
                std::process::exit(FORCED_EXIT_CODE);
            }
            log::info!("stop requested; finishing the work in hand (signal again to force)");
        })
        .map_err(|e| format!("cannot install the SIGINT/SIGTERM handler: {e}"))?;
        Ok(shutdown)
    }

    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// Asks loops to stop, as a signal would.
    pub fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
    }

    /// Sleeps for `duration` or until a stop is requested; returns false if it was.
    pub fn sleep(&self, duration: Duration) -> bool {
        let deadline = Instant::now() + duration;
        loop {
            if self.requested() {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            std::thread::sleep((deadline - now).min(Duration::from_millis(50)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleep_lasts_its_duration_without_a_request() {
        let s = Shutdown::default();
        let started = Instant::now();
        assert!(s.sleep(Duration::from_millis(30)));
        assert!(started.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn sleep_is_cut_short_by_a_request() {
        const LONG: Duration = Duration::from_secs(30);
        let s = Shutdown::default();
        let other = s.clone();
        let t = std::thread::spawn(move || other.sleep(LONG));
        // The request comes 200 ms into the sleep: a sleep that looked at the flag only at
        // its deadline would take all of LONG and fail the bound below.
        std::thread::sleep(Duration::from_millis(200));
        let asked = Instant::now();
        s.request();
        assert!(!t.join().unwrap(), "a sleep cut short says so");
        let woke = asked.elapsed();
        // The flag is looked at every 50 ms; a sixth of LONG leaves a loaded machine room.
        assert!(
            woke < LONG / 6,
            "the sleep ended {woke:?} after the request, as if it waited for its deadline"
        );
    }
}
