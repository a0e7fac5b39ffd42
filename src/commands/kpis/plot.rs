//! `metricsctl kpis plot --out FILE.svg`: the latest windows (or those of the last `--since`)
//! drawn as one SVG file, a panel per KPI over window end time, windows with alerts in red.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{no_windows_yet, open_store, read_failure};
use crate::cli::PlotArgs;
use crate::commands::{now_utc, CommandError};
use crate::kpi_series::WindowKpis;
use crate::plot::{svg, Plot};
use crate::settings::{PlotSettings, PlotWindows, SettingError, Sources, MAX_KPIS_LIMIT};
use crate::window::{ALERT_ERROR_COUNT, ALERT_PERCENT};

pub fn plot(args: &PlotArgs) -> Result<(), CommandError> {
    let settings = PlotSettings::resolve(args, &Sources::load()?)?;
    // A path that cannot be written is a wrong setting: found before the database is asked,
    // and without touching a file already there until the new picture is complete.
    let mut staged = StagedFile::create(&settings.out)?;
    let store = open_store(&settings.mongo, &settings.kpi_collection)?;
    let failed = read_failure(&settings.mongo);
    let documents = match settings.windows {
        PlotWindows::Latest(n) => {
            let mut newest_first = store.latest_windows(n).map_err(&failed)?;
            newest_first.reverse();
            newest_first
        }
        PlotWindows::EndedWithin(span) => store
            .windows_ended_since(now_utc() - span, MAX_KPIS_LIMIT)
            .map_err(&failed)?,
    };
    let mut stdout = std::io::stdout().lock();
    if documents.is_empty() {
        let line = match (settings.windows, store.latest_windows(1).map_err(&failed)?) {
            (PlotWindows::EndedWithin(span), any) if !any.is_empty() => format!(
                "No KPI window in {}.{} ended in the last {}: nothing to plot.",
                settings.mongo.database,
                settings.kpi_collection,
                span_text(span)
            ),
            _ => no_windows_yet(&settings.mongo, &settings.kpi_collection),
        };
        let _ = writeln!(stdout, "{line}");
        return Ok(());
    }

    let windows: Vec<WindowKpis> = documents.iter().map(WindowKpis::from_document).collect();
    let title = format!(
        "KPI windows of {}.{}",
        settings.mongo.database, settings.kpi_collection
    );
    let caption = format!(
        "Red points and ticks: windows with an alert (a reading with CPU or memory at or \
         above {ALERT_PERCENT} %, or {ALERT_ERROR_COUNT} or more errors)."
    );
    let picture = svg(&Plot {
        windows: &windows,
        title: &title,
        caption: &caption,
    });
    staged.finish(picture.as_bytes())?;

    let placed = windows.iter().filter(|w| w.end.is_some()).count();
    let alerted = windows
        .iter()
        .filter(|w| w.end.is_some() && w.alerted)
        .count();
    let mut summary = format!(
        "Wrote {}: {placed} windows, {alerted} with alerts.",
        settings.out.display()
    );
    if placed < windows.len() {
        summary.push_str(&format!(
            " {} without a window_end left out.",
            windows.len() - placed
        ));
    }
    let _ = writeln!(stdout, "{summary}");
    Ok(())
}

/// A span as `--since` takes it, in its largest whole unit: `30m`, `2h`, `1d`.
fn span_text(span: Duration) -> String {
    let s = span.as_secs();
    match s {
        _ if s >= 86_400 && s.is_multiple_of(86_400) => format!("{}d", s / 86_400),
        _ if s >= 3_600 && s.is_multiple_of(3_600) => format!("{}h", s / 3_600),
        _ if s >= 60 && s.is_multiple_of(60) => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

/// The picture is written next to its destination and renamed onto it once complete, so a
/// failed run never leaves a truncated SVG where a good one was. Removed if not finished.
struct StagedFile {
    file: Option<File>,
    staging: PathBuf,
    destination: PathBuf,
}

impl StagedFile {
    fn create(destination: &Path) -> Result<StagedFile, CommandError> {
        let name = destination
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let staging =
            destination.with_file_name(format!(".{name}.{}.metricsctl-tmp", std::process::id()));
        let file = File::create(&staging).map_err(|e| {
            CommandError::Setting(SettingError {
                setting: "--out".into(),
                problem: format!("cannot write {} ({e})", destination.display()),
            })
        })?;
        Ok(StagedFile {
            file: Some(file),
            staging,
            destination: destination.to_path_buf(),
        })
    }

    fn finish(&mut self, contents: &[u8]) -> Result<(), CommandError> {
        let failed = |e: std::io::Error| {
            CommandError::Failed(format!("cannot write {} ({e})", self.destination.display()))
        };
        let mut file = self.file.take().ok_or_else(|| {
            CommandError::Failed(format!("{} written twice", self.destination.display()))
        })?;
        file.write_all(contents).map_err(failed)?;
        file.sync_all().map_err(failed)?;
        drop(file);
        std::fs::rename(&self.staging, &self.destination).map_err(failed)
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        // After a rename the staging name is gone and this does nothing.
        let _ = std::fs::remove_file(&self.staging);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_is_written_back_in_its_largest_whole_unit() {
        let text = |s| span_text(Duration::from_secs(s));
        assert_eq!(
            [
                text(45),
                text(1800),
                text(7200),
                text(86_400),
                text(90),
                text(172_800)
            ],
            ["45s", "30m", "2h", "1d", "90s", "2d"]
        );
    }

    #[test]
    fn a_staged_picture_replaces_the_file_only_when_finished() {
        let dir = std::env::temp_dir().join(format!("metricsctl-plot-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("k.svg");
        std::fs::write(&out, "old").unwrap();
        // Abandoned (the database failed, say): the old picture stays, no staging file left.
        drop(StagedFile::create(&out).unwrap());
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "old");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        let mut staged = StagedFile::create(&out).unwrap();
        staged.finish(b"new").unwrap();
        drop(staged);
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "new");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        match StagedFile::create(&dir.join("missing").join("k.svg")) {
            Err(CommandError::Setting(e)) => assert_eq!(e.setting, "--out"),
            _ => panic!("a missing directory is a wrong --out"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
