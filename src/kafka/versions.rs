//! Which version of each Kafka API a request goes out at.
//!
//! Every new connection asks the broker for its ranges (ApiVersions); each request then uses the
//! highest version both sides support, within the range our code was written and tested for
//! ([`ours`]). Our lowest versions need Kafka 3.1 (Fetch v13 and Metadata v12 name topics by id);
//! a broker that lacks one of them gets a [`TooOld`] naming the API, both ranges and its
//! address, which the commands turn into one error line and exit code 1.

use std::collections::HashMap;
use std::fmt;

use kafka_protocol::messages::ApiKey;

/// An inclusive range of versions of one API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub min: i16,
    pub max: i16,
}

const fn range(min: i16, max: i16) -> Range {
    Range { min, max }
}

/// The ApiVersions version sent first on every connection: v3 (Kafka 2.4+) is flexible and
/// names the client software; a broker that does not know it answers UNSUPPORTED_VERSION in the
/// v0 layout, with its ranges.
pub const API_VERSIONS: i16 = 3;

/// The versions our code speaks, per API. A range is widened only once the request built for
/// it has been checked field by field against the schema of each version and run against the
/// brokers the README names (3.9 and 4.4).
pub fn ours(api: ApiKey) -> Option<Range> {
    Some(match api {
        // v3: record batches v2 with producer id, epoch and sequence; v13 names topics by id.
        ApiKey::Produce => range(3, 12),
        // v13: topics by id; v15 moved the replica id out of the request.
        ApiKey::Fetch => range(13, 13),
        ApiKey::ListOffsets => range(7, 7),
        // v12: topic ids; v13 only adds a top-level error code to the answer.
        ApiKey::Metadata => range(12, 13),
        ApiKey::OffsetCommit => range(8, 8),
        ApiKey::OffsetFetch => range(7, 7),
        // v4 asks for a list of keys instead of one.
        ApiKey::FindCoordinator => range(3, 3),
        // v9 (KIP-814): a static leader that rejoins a stable group is told to skip the
        // assignment, instead of the group rebalancing; v8 only adds an optional reason.
        ApiKey::JoinGroup => range(7, 9),
        ApiKey::Heartbeat => range(4, 4),
        ApiKey::LeaveGroup => range(4, 4),
        ApiKey::SyncGroup => range(5, 5),
        ApiKey::DescribeGroups => range(5, 5),
        ApiKey::ApiVersions => range(API_VERSIONS, API_VERSIONS),
        // v3 (KIP-360) lets an idempotent producer bump its own epoch; v6 adds two-phase
        // commit fields a non-transactional producer has no use for.
        ApiKey::InitProducerId => range(3, 5),
        // v1 carries the mechanism's tokens in SaslAuthenticate (v0 sent them raw);
        // SaslAuthenticate v1 (KIP-368) gives the session lifetime re-authentication needs.
        ApiKey::SaslHandshake => range(1, 1),
        ApiKey::SaslAuthenticate => range(1, 2),
        _ => return None,
    })
}

/// What one broker said it supports, by API key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrokerVersions {
    ranges: HashMap<i16, Range>,
}

impl BrokerVersions {
    pub fn new(ranges: impl IntoIterator<Item = (i16, Range)>) -> Self {
        BrokerVersions {
            ranges: ranges.into_iter().collect(),
        }
    }

    /// The version to send `api` at: the highest both sides support.
    pub fn pick(&self, api: ApiKey, broker: &str) -> Result<i16, TooOld> {
        let ours = ours(api).unwrap_or_else(|| {
            // Only a request type the code never sends could miss from the table.
            let v = api.valid_versions();
            range(v.min, v.max)
        });
        let theirs = self.ranges.get(&(api as i16)).copied();
        match theirs {
            Some(t) if t.max >= ours.min && t.min <= ours.max => Ok(t.max.min(ours.max)),
            _ => Err(TooOld {
                api,
                broker: broker.to_string(),
                ours,
                theirs,
            }),
        }
    }

    /// The version each API we speak goes out at, for the log and the README's table.
    pub fn summary(&self, broker: &str) -> String {
        ApiKey::iter()
            .filter(|api| ours(*api).is_some())
            .map(|api| match self.pick(api, broker) {
                Ok(v) => format!("{} v{v}", api_name(api)),
                Err(_) => format!("{} none", api_name(api)),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for BrokerVersions {
    /// The broker's range of each API we speak, e.g. `Produce v3-v13, Fetch v4-v18, ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ranges: Vec<String> = ApiKey::iter()
            .filter(|api| ours(*api).is_some())
            .filter_map(|api| {
                let r = self.ranges.get(&(api as i16))?;
                Some(format!("{} v{}-v{}", api_name(api), r.min, r.max))
            })
            .collect();
        f.write_str(&ranges.join(", "))
    }
}

/// A broker that lacks every version of an API our code speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooOld {
    pub api: ApiKey,
    pub broker: String,
    pub ours: Range,
    /// None: the broker does not offer the API at all.
    pub theirs: Option<Range>,
}

impl fmt::Display for TooOld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let theirs = match self.theirs {
            Some(t) => format!("supports {} v{}-v{}", api_name(self.api), t.min, t.max),
            None => format!("does not offer {}", api_name(self.api)),
        };
        write!(
            f,
            "the Kafka broker at {} {theirs}, but metricsctl needs v{}-v{}: upgrade the \
             broker to Kafka 3.1 or later",
            self.broker, self.ours.min, self.ours.max
        )
    }
}

/// The API's name as Kafka's documentation writes it (`ApiKey`'s variant name).
pub fn api_name(api: ApiKey) -> String {
    format!("{api:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ApiVersions answers for the APIs metricsctl speaks: (api key, min, max). KAFKA_3_9 was
    /// recorded from Apache Kafka 3.9.2 and KAFKA_4_4 from Apache Kafka 4.4.0 (KRaft, one node,
    /// `RUST_LOG=metricsctl=trace metricsctl status`). 4.4 still lists Produce v0-v2 although it
    /// refuses them (KIP-896 removed them; the answer keeps them for old clients' sake).
    const KAFKA_3_9: &[(i16, i16, i16)] = &[
        (0, 0, 11),
        (1, 0, 17),
        (2, 0, 9),
        (3, 0, 12),
        (8, 0, 9),
        (9, 0, 9),
        (10, 0, 6),
        (11, 0, 9),
        (12, 0, 4),
        (13, 0, 5),
        (14, 0, 5),
        (15, 0, 5),
        (18, 0, 4),
        (22, 0, 5),
    ];
    const KAFKA_4_4: &[(i16, i16, i16)] = &[
        (0, 0, 13),
        (1, 4, 18),
        (2, 1, 10),
        (3, 0, 13),
        (8, 2, 10),
        (9, 1, 10),
        (10, 0, 6),
        (11, 0, 9),
        (12, 0, 4),
        (13, 0, 5),
        (14, 0, 5),
        (15, 0, 6),
        (18, 0, 5),
        (22, 0, 5),
    ];

    fn broker(answer: &[(i16, i16, i16)]) -> BrokerVersions {
        BrokerVersions::new(
            answer
                .iter()
                .map(|&(key, min, max)| (key, Range { min, max })),
        )
    }

    #[test]
    fn each_api_goes_out_at_the_highest_version_both_sides_speak() {
        let old = broker(KAFKA_3_9);
        let new = broker(KAFKA_4_4);
        let at = |b: &BrokerVersions, api| b.pick(api, "b:9092").unwrap();
        // Produce: 3.9 stops at v11; 4.4 offers v13, which names topics by id: we stop at v12.
        assert_eq!(at(&old, ApiKey::Produce), 11);
        assert_eq!(at(&new, ApiKey::Produce), 12);
        assert_eq!(at(&old, ApiKey::Metadata), 12);
        assert_eq!(at(&new, ApiKey::Metadata), 13);
        assert_eq!(at(&old, ApiKey::InitProducerId), 5);
        assert_eq!(at(&new, ApiKey::InitProducerId), 5);
        for b in [&old, &new] {
            assert_eq!(at(b, ApiKey::Fetch), 13);
            assert_eq!(at(b, ApiKey::FindCoordinator), 3);
            assert_eq!(at(b, ApiKey::JoinGroup), 9);
            assert_eq!(at(b, ApiKey::ApiVersions), 3);
        }
    }

    #[test]
    fn a_broker_without_our_lowest_version_is_refused_with_both_ranges_named() {
        // Kafka 4.0 dropped Produce v0-v2; here a broker that only has them (Kafka 0.10).
        let mut answer = KAFKA_3_9.to_vec();
        answer[0] = (0, 0, 2);
        let e = broker(&answer)
            .pick(ApiKey::Produce, "old:9092")
            .unwrap_err();
        assert_eq!(e.theirs, Some(Range { min: 0, max: 2 }));
        assert_eq!(
            e.to_string(),
            "the Kafka broker at old:9092 supports Produce v0-v2, but metricsctl needs v3-v12: \
             upgrade the broker to Kafka 3.1 or later"
        );
        // Kafka 3.0 has Fetch up to v12 only.
        let mut answer = KAFKA_3_9.to_vec();
        answer[1] = (1, 0, 12);
        let e = broker(&answer).pick(ApiKey::Fetch, "b:1").unwrap_err();
        assert!(e.to_string().contains("supports Fetch v0-v12"), "{e}");
        // A broker above our range (a future Kafka that dropped v13) is refused too.
        let mut answer = KAFKA_4_4.to_vec();
        answer[1] = (1, 14, 20);
        assert!(broker(&answer).pick(ApiKey::Fetch, "b:1").is_err());
        // An API missing from the answer.
        let e = broker(&[]).pick(ApiKey::InitProducerId, "b:1").unwrap_err();
        assert_eq!(e.theirs, None);
        assert!(
            e.to_string().contains("does not offer InitProducerId"),
            "{e}"
        );
    }

    #[test]
    fn the_summary_names_every_api_we_speak() {
        let s = broker(KAFKA_4_4).summary("b:1");
        assert!(
            s.starts_with("Produce v12, Fetch v13, ListOffsets v7, Metadata v13"),
            "{s}"
        );
        assert!(s.contains("InitProducerId v5"), "{s}");
        assert!(broker(&[]).summary("b:1").contains("Produce none"));
    }
}
