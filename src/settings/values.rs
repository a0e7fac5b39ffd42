//! Parsers of one value each (numbers, spans of time, lists, names), shared by the commands'
//! settings; each error names the setting and where its value came from.

use super::*;

/// The longest `--since`: a hundred years of windows is everything there is.
pub(super) const MAX_SPAN_DAYS: u64 = 36_500;

/// A span of time such as `45s`, `30m`, `2h` or `1d`: a whole number of at least 1 and a unit.
pub(super) fn span(v: &Value) -> Result<Duration, SettingError> {
    let problem = || {
        v.error(format!(
            "must be a whole number of at least 1 followed by s, m, h or d, such as 30m, 2h \
             or 1d, and at most {MAX_SPAN_DAYS}d"
        ))
    };
    let text = v.text.trim();
    let unit = text.chars().last().ok_or_else(problem)?;
    let unit_seconds: u64 = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        _ => return Err(problem()),
    };
    let number = &text[..text.len() - unit.len_utf8()];
    number
        .parse::<u64>()
        .ok()
        .filter(|n| *n >= 1 && number.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.checked_mul(unit_seconds))
        .filter(|s| *s <= MAX_SPAN_DAYS * 86_400)
        .map(Duration::from_secs)
        .ok_or_else(problem)
}

/// `METRICS_SUFFIX`, from which the exercise's default names are built.
pub(super) fn suffix(src: &Sources) -> Result<String, SettingError> {
    match src.var("METRICS_SUFFIX") {
        Some(v) => {
            let ok = !v.text.is_empty()
                && v.text
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if ok {
                Ok(v.text)
            } else {
                Err(v.error("must be letters, digits, '_' or '-', e.g. iabd07"))
            }
        }
        None => Ok(DEFAULT_SUFFIX.to_string()),
    }
}

pub(super) fn non_empty_name(v: &Value) -> Result<String, SettingError> {
    let t = v.text.trim();
    if t.is_empty() {
        Err(v.error("must not be empty"))
    } else {
        Ok(t.to_string())
    }
}

pub(super) fn servers(v: Option<Value>) -> Result<Vec<String>, SettingError> {
    let Some(v) = v else {
        return Ok(DEFAULT_SERVERS.split(',').map(String::from).collect());
    };
    let list = list(&v.text);
    if list.is_empty() {
        return Err(v.error("must name at least one server, e.g. web01,db01"));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = list.iter().find(|s| !seen.insert(s.as_str())) {
        return Err(v.error(format!("names {dup:?} twice")));
    }
    Ok(list)
}

pub(super) fn seconds(v: &Value) -> Result<Duration, SettingError> {
    v.text
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0 && *s <= 31_536_000.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| v.error("must be a number of seconds, 0 or more"))
}

/// More than the group's session timeout: a member's heartbeats prove it alive for that long
/// anyway, and a shorter limit would make a member leave over a write that a database
/// failover (a few seconds) holds up.
pub(super) fn max_step_interval(v: &Value) -> Result<Duration, SettingError> {
    let session = GROUP_SESSION_TIMEOUT.as_secs_f64();
    v.text
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > session && *s <= MAX_STEP_INTERVAL_LIMIT_SECONDS)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| {
            v.error(format!(
                "must be a number of seconds above the group session timeout ({session} s) and \
                 at most {MAX_STEP_INTERVAL_LIMIT_SECONDS}"
            ))
        })
}

pub(super) fn positive(v: &Value) -> Result<u64, SettingError> {
    v.text
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| v.error("must be a whole number of at least 1"))
}

/// A whole number from 1 to `max`.
pub(super) fn bounded(v: &Value, max: usize) -> Result<usize, SettingError> {
    let n = positive(v)?;
    usize::try_from(n)
        .ok()
        .filter(|n| *n <= max)
        .ok_or_else(|| v.error(format!("must be a whole number from 1 to {max}")))
}

/// A comma-separated list, items trimmed, empty items skipped.
pub(super) fn list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}
