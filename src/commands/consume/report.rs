//! The consumer's periodic and final log lines.

use std::num::NonZeroUsize;
use std::time::Duration;

use log::info;

use crate::engine::Driver;

/// The throughput line: what the steps did since the last one.
pub fn log_throughput(driver: &mut Driver, elapsed: Duration, window_size: NonZeroUsize) {
    let t = driver.take_interval();
    let c = t.counts;
    info!(
        "throughput: {} messages in {:.1} s ({:.1} msg/s), {} steps, {} stored, {} replayed, \
         {} dead-lettered, {} windows; open window {}/{}",
        c.messages,
        elapsed.as_secs_f64(),
        c.messages as f64 / elapsed.as_secs_f64().max(1e-9),
        t.batches,
        c.stored,
        c.replayed,
        c.dead_lettered,
        c.windows,
        driver.engine().pending(),
        window_size
    );
}

/// The last line: what the run did and where it leaves the group's offsets.
pub fn log_totals(driver: &Driver) {
    let t = &driver.totals().counts;
    info!(
        "consumer stopped: {} messages read ({} stored, {} replayed, {} dead-lettered), \
         {} windows stored; the open window of {} messages is not stored and will be \
         recomputed on the next run; committed offsets: {}",
        t.messages,
        t.stored,
        t.replayed,
        t.dead_lettered,
        t.windows,
        driver.engine().pending(),
        driver.committed().map_or("unchanged".to_string(), |c| {
            c.iter()
                .map(|(p, o)| format!("{p}:{o}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
    );
}
