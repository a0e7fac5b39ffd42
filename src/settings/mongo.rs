//! The MongoDB settings: the connection string (checked by the driver's own parser, its
//! password registered as a secret), the database and the collection names.

use super::*;

/// Where the MongoDB data lives.
#[derive(Debug, Clone, PartialEq)]
pub struct MongoSettings {
    pub uri: String,
    pub database: String,
}

pub(super) fn mongo(
    src: &Sources,
    uri_flag: &Option<String>,
    database_flag: &Option<String>,
) -> Result<MongoSettings, SettingError> {
    let uri = match src.pick(
        uri_flag,
        "mongodb-uri",
        &["MONGODB_URI", "CONNECTION_STRING"],
    ) {
        Some(v) => mongodb_uri(&v)?,
        None => DEFAULT_MONGODB_URI.to_string(),
    };
    let database = match src.pick(database_flag, "database", &["MONGODB_DATABASE"]) {
        Some(v) => {
            let d = v.text.trim();
            let legal =
                !d.is_empty() && d.len() < 64 && !d.chars().any(|c| "/\\. \"$*<>:|?".contains(c));
            if !legal {
                return Err(v.error(
                    "must be 1-63 characters without spaces or any of / \\ . \" $ * < > : | ?",
                ));
            }
            d.to_string()
        }
        None => DEFAULT_DATABASE.to_string(),
    };
    Ok(MongoSettings { uri, database })
}

/// Checks a MongoDB URI and registers its password as a secret, so it is masked in every later
/// log line and error. The shape is checked here, for plain messages; then the driver's own
/// parser checks every option's name and value, so a URI the driver would refuse stops the
/// program at start. That parse needs no network: a `mongodb+srv://` URI's DNS records are
/// looked up when connecting.
pub(super) fn mongodb_uri(v: &Value) -> Result<String, SettingError> {
    let uri = v.text.trim().to_string();
    redact::register_uri_password(&uri);
    let rest = uri
        .strip_prefix("mongodb://")
        .or_else(|| uri.strip_prefix("mongodb+srv://"))
        .ok_or_else(|| v.error("must start with mongodb:// or mongodb+srv://"))?;
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let hosts = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if hosts.is_empty() || hosts.split(',').any(str::is_empty) || uri.contains(char::is_whitespace)
    {
        return Err(v.error("has no host; expected e.g. mongodb://127.0.0.1:27017"));
    }
    if let Some(reason) = crate::store::uri_refusal(&uri) {
        // A raw reserved character makes the driver cut the password somewhere inside it, and
        // its reason may then quote a piece (`got pa` as a port): name the characters instead.
        let raw = redact::raw_reserved_in_password(&uri);
        if !raw.is_empty() {
            let encoded: Vec<String> = raw
                .iter()
                .map(|c| format!("{c} as {}", redact::percent_encode(&c.to_string())))
                .collect();
            return Err(v.error(format!(
                "its password holds reserved characters, which must be percent-encoded: write {}",
                encoded.join(", ")
            )));
        }
        return Err(v.error(format!(
            "the MongoDB driver refuses it: {}; correct the connection string (options: \
             https://www.mongodb.com/docs/manual/reference/connection-string-options/)",
            redact::scrub(&reason)
        )));
    }
    Ok(uri)
}

/// A collection's flag, its variable, and the kind in its default name.
pub(super) struct CollectionSetting {
    flag: &'static str,
    var: &'static str,
    kind: &'static str,
}

/// `--raw-collection`, else `system_metrics_raw_<suffix>`.
pub(super) const RAW: CollectionSetting = CollectionSetting {
    flag: "raw-collection",
    var: "MONGODB_RAW_COLLECTION",
    kind: "raw",
};
/// `--kpi-collection`, else `system_metrics_kpis_<suffix>`.
pub(super) const KPIS: CollectionSetting = CollectionSetting {
    flag: "kpi-collection",
    var: "MONGODB_KPI_COLLECTION",
    kind: "kpis",
};
/// `--dlq-collection`, else `system_metrics_dlq_<suffix>`.
pub(super) const DLQ: CollectionSetting = CollectionSetting {
    flag: "dlq-collection",
    var: "MONGODB_DLQ_COLLECTION",
    kind: "dlq",
};

/// A collection named by its flag or variable, else the exercise's
/// `system_metrics_<kind>_<suffix>`.
pub(super) fn named_collection(
    src: &Sources,
    flag: &Option<String>,
    which: &CollectionSetting,
    suffix: &str,
) -> Result<String, SettingError> {
    collection(
        src.pick(flag, which.flag, &[which.var]),
        format!("system_metrics_{}_{suffix}", which.kind),
    )
}

/// Collection names: MongoDB forbids `$` and the `system.` prefix.
fn collection(v: Option<Value>, default: String) -> Result<String, SettingError> {
    let Some(v) = v else {
        return Ok(default);
    };
    let c = v.text.trim();
    if c.is_empty() || c.contains('$') || c.contains('\0') || c.starts_with("system.") {
        return Err(v.error("must be a non-empty name without '$', not starting with 'system.'"));
    }
    Ok(c.to_string())
}
