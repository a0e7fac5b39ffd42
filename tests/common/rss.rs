//! A process's peak resident memory, watched while it runs.
// A test binary lists the modules of `tests/common/` it needs and uses part of each; what one
// binary leaves unused another uses (`cargo test --tests` builds them all without a warning).
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A process's peak resident memory (`VmHWM` of /proc/PID/status, in KiB), polled every 50 ms
/// by a thread until the process is gone; [`PeakRss::sample`] reads it once more (call it just
/// before killing the process).
pub struct PeakRss {
    pid: u32,
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

/// `VmHWM` of /proc/PID/status in KiB; `None` once the process is gone (a zombie has none).
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Starts watching `pid`'s peak resident memory.
pub fn watch_peak_rss(pid: u32) -> PeakRss {
    let peak = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (p, s) = (peak.clone(), stop.clone());
    let handle = std::thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            // A zombie has no VmHWM line: the process is over.
            let Some(kib) = vm_hwm_kib(pid) else { break };
            p.fetch_max(kib, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    PeakRss {
        pid,
        peak,
        stop,
        handle: Some(handle),
    }
}

impl PeakRss {
    /// Reads the peak now (the process still runs) and returns the largest seen, in KiB.
    pub fn sample(&self) -> u64 {
        if let Some(kib) = vm_hwm_kib(self.pid) {
            self.peak.fetch_max(kib, Ordering::Relaxed);
        }
        self.peak.load(Ordering::Relaxed)
    }

    /// Stops polling; the largest peak seen, in KiB.
    pub fn finish(&mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for PeakRss {
    fn drop(&mut self) {
        self.finish();
    }
}
