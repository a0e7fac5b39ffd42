//! Connecting and the indexes every collection needs (the unique keys that make every write
//! idempotent).

use super::*;

/// Why the driver refuses `uri` as a connection string (its reason alone, without its "Kind:
/// ..., labels: ..." wrapping), or `None` when it parses. Settings check the URI at start with
/// this, so that the driver's rules stay in the one folder that imports it.
pub fn uri_refusal(uri: &str) -> Option<String> {
    let e = mongodb::options::ConnectionString::parse(uri).err()?;
    Some(match e.kind.as_ref() {
        ErrorKind::InvalidArgument { message, .. } => message.clone(),
        other => other.to_string(),
    })
}

impl Store {
    /// Parses the URI and prepares a client; no network traffic yet except the DNS lookups of a
    /// `mongodb+srv://` URI. An invalid URI is a permanent error.
    pub fn open(settings: &MongoSettings, names: &CollectionNames) -> Result<Store, StoreError> {
        let mut options = ClientOptions::parse(&settings.uri)
            .run()
            .map_err(|e| store_error("connection-string parsing", &e))?;
        options.app_name = Some("metricsctl".into());
        // Fail fast by default; a timeout written in the URI wins.
        options
            .server_selection_timeout
            .get_or_insert(SERVER_SELECTION_TIMEOUT);
        options
            .connect_timeout
            .get_or_insert(SERVER_SELECTION_TIMEOUT);
        options.heartbeat_freq.get_or_insert(SERVER_CHECK_INTERVAL);
        let client = Client::with_options(options).map_err(|e| store_error("connect", &e))?;
        let database = client.database(&settings.database);
        Ok(Store {
            raw: database.collection(&names.raw),
            raw_bytes: database.collection(&names.raw),
            kpi: database.collection(&names.kpi),
            staged: database.collection(&staged_collection(&names.kpi)),
            dlq: database.collection(&names.dlq),
            database,
        })
    }

    /// Round-trips to the server.
    pub fn ping(&self) -> Result<(), StoreError> {
        self.database
            .run_command(doc! {"ping": 1})
            .run()
            .map(|_| ())
            .map_err(|e| store_error("ping", &e))
    }

    /// The unique index that makes raw storage idempotent, and the index a restart uses to
    /// find its stream's last window.
    pub fn ensure_indexes(&self) -> Result<(), StoreError> {
        let unique = IndexOptions::builder()
            .unique(true)
            .name("message_uuid_unique".to_string())
            .build();
        self.raw
            .create_index(
                IndexModel::builder()
                    .keys(doc! {"message_uuid": 1})
                    .options(unique)
                    .build(),
            )
            .run()
            .map_err(|e| store_error("create raw index", &e))?;
        self.kpi
            .create_index(
                IndexModel::builder()
                    .keys(doc! {"stream": 1, "seq": -1})
                    .build(),
            )
            .run()
            .map_err(|e| store_error("create KPI index", &e))?;
        // A restart finds the furthest window of its group on its log among these alone.
        self.kpi
            .create_index(
                IndexModel::builder()
                    .keys(doc! {"kafka.topic_id": 1, "kafka.group": 1})
                    .build(),
            )
            .run()
            .map_err(|e| store_error("create KPI index", &e))?;
        // `kpis show` sorts and `--follow` polls by the time windows were stored.
        self.kpi
            .create_index(IndexModel::builder().keys(doc! {"computed_at": 1}).build())
            .run()
            .map_err(|e| store_error("create KPI index", &e))?;
        // Publication reads and forgets one engine's staged windows up to a number.
        self.staged
            .create_index(
                IndexModel::builder()
                    .keys(doc! {"token": 1, "seq": 1})
                    .build(),
            )
            .run()
            .map_err(|e| store_error("create staged-window index", &e))?;
        Ok(())
    }
}
