//! The connections to the brokers, one per broker: taken out for a fetch on a thread of its
//! own and given back, and a broker whose connections keep failing tried again only after a
//! pause.

use std::time::{Duration, Instant};

use super::super::connection::{Connection, WireError};
use super::super::security::Security;
use super::Cluster;

/// The pause before a broker whose last connection handed out never came back is tried again,
/// doubled at each such connection in a row, up to the longest (Java's `reconnect.backoff.ms`
/// and `reconnect.backoff.max.ms`, 50 ms and 1 s): a leader that fails every exchange at once
/// (closes each answer half-way, answers another request) would otherwise get a new connection
/// every fetch round, tens a second. The longest is short, so a broker back from an outage is
/// tried again within a second.
const RECONNECT_PAUSE_FIRST: Duration = Duration::from_millis(100);
const RECONNECT_PAUSE_MAX: Duration = Duration::from_secs(1);

impl Cluster {
    /// A broker's `host:port`, from the last metadata answer.
    fn address(&self, broker: i32) -> Result<String, WireError> {
        self.brokers
            .get(&broker)
            .cloned()
            .ok_or_else(|| WireError::Io(format!("broker {broker} is not in the metadata")))
    }

    /// Takes the connection to a broker out of the pool (opening it if needed), so that
    /// fetches to several leaders can run on threads of their own; give it back with `put`.
    pub fn take(&mut self, broker: i32) -> Result<Connection, WireError> {
        let addr = self.address(broker)?;
        match self.connections.remove(&addr) {
            Some(c) => Ok(c),
            None => Connection::open(&addr, &self.security),
        }
    }

    /// The open connection to a broker, or where and how to open one: for callers that open it
    /// on a thread of their own, so that a broker that accepts and never answers the handshake
    /// holds that thread only. A connection planned here comes back with `put` once it served;
    /// while the last ones did not (each exchange failed), the broker gets a new one only after
    /// a pause, doubled each time ([`reconnect_pause`]): an error until then.
    pub fn take_or_plan(&mut self, broker: i32) -> Result<ToOpen, WireError> {
        let addr = self.address(broker)?;
        if let Some(c) = self.connections.remove(&addr) {
            return Ok(ToOpen::Ready(c));
        }
        let now = Instant::now();
        let failed = match self.unreturned.get(&addr) {
            Some(&(planned, failed)) => {
                let pause = reconnect_pause(failed);
                if now < planned + pause {
                    return Err(WireError::Io(format!(
                        "broker {broker} at {addr}: its last {failed} connection(s) failed; the \
                         next in {:.1} s",
                        (planned + pause - now).as_secs_f64()
                    )));
                }
                failed
            }
            None => 0,
        };
        // Counted as failed until it comes back.
        self.unreturned
            .insert(addr.clone(), (now, failed.saturating_add(1)));
        Ok(ToOpen::Open(addr, self.security.clone()))
    }

    pub fn put(&mut self, connection: Connection) {
        self.unreturned.remove(connection.addr());
        self.connections
            .insert(connection.addr().to_string(), connection);
    }

    /// Forgets every connection (after a failure whose broker is unknown).
    pub fn disconnect_all(&mut self) {
        self.connections.clear();
        self.coordinator = None;
    }
}

/// The pause after `failed` connections in a row to one broker failed: from
/// [`RECONNECT_PAUSE_FIRST`] after the first, doubled up to [`RECONNECT_PAUSE_MAX`].
pub(super) fn reconnect_pause(failed: u32) -> Duration {
    RECONNECT_PAUSE_FIRST
        .saturating_mul(1 << failed.saturating_sub(1).min(10))
        .min(RECONNECT_PAUSE_MAX)
}

/// A connection to a broker, or what opening one takes.
pub enum ToOpen {
    Ready(Connection),
    Open(String, Security),
}

impl ToOpen {
    /// The connection, opening it if need be.
    pub fn open(self) -> Result<Connection, WireError> {
        match self {
            ToOpen::Ready(c) => Ok(c),
            ToOpen::Open(addr, security) => Connection::open(&addr, &security),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shutdown::Shutdown;

    #[test]
    fn reconnect_pauses_double_from_100_ms_up_to_one_second() {
        let pauses: Vec<u128> = (1..7).map(|n| reconnect_pause(n).as_millis()).collect();
        assert_eq!(pauses, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(reconnect_pause(u32::MAX), RECONNECT_PAUSE_MAX);
    }

    #[test]
    fn a_broker_whose_connections_do_not_come_back_is_planned_again_only_after_a_pause() {
        let (addr, _) = super::super::super::connection_tests::fake_broker(Vec::new());
        let mut cluster = Cluster::new(vec![addr.clone()], "t".into(), Shutdown::default());
        cluster.brokers.insert(1, addr.clone());
        let planned = |c: &mut Cluster| matches!(c.take_or_plan(1), Ok(ToOpen::Open(..)));
        assert!(planned(&mut cluster), "the first connection is planned");
        // It never came back: the next is refused until the first pause is over...
        let refused = cluster.take_or_plan(1).err().map(|e| e.to_string());
        assert!(
            refused.as_deref().is_some_and(|e| e.contains("failed")),
            "{refused:?}"
        );
        std::thread::sleep(RECONNECT_PAUSE_FIRST + Duration::from_millis(50));
        // ...then planned, and refused again for twice as long: the refusal counts two
        // failures (reconnect_pause(2) is the doubled pause, tested above).
        assert!(planned(&mut cluster));
        let second_planned = std::time::Instant::now();
        let refused = cluster.take_or_plan(1).err().map(|e| e.to_string());
        assert!(
            refused
                .as_deref()
                .is_some_and(|e| e.contains("its last 2 connection(s) failed")),
            "{refused:?}"
        );
        std::thread::sleep(RECONNECT_PAUSE_FIRST + Duration::from_millis(50));
        // On a loaded machine the sleep may outlast the doubled pause too: then the check
        // above is the whole claim.
        if second_planned.elapsed() < 2 * RECONNECT_PAUSE_FIRST {
            assert!(
                cluster.take_or_plan(1).is_err(),
                "the second pause is longer"
            );
        }
        // A connection that served and came back ends the pauses.
        let connection = Connection::open(&addr, &Security::plaintext()).unwrap();
        cluster.put(connection);
        assert!(matches!(cluster.take_or_plan(1), Ok(ToOpen::Ready(_))));
        assert!(planned(&mut cluster), "planned at once after a success");
    }
}
