//! Static members (KIP-345) of one consumer group, shared by tests/static_membership.rs and
//! tests/static_restart.rs: each member a `metricsctl consume --group-instance-id ID` with a
//! `/metrics` endpoint of its own, where its view of the group is read.

use std::time::{Duration, Instant};

use crate::common::process::{poll, Background};
use crate::common::scrape::{free_port, quick_value};
use crate::common::services::Sandbox;

/// The consumer's session timeout (src/settings/mod.rs, `GROUP_SESSION_TIMEOUT`).
pub const SESSION: Duration = Duration::from_secs(10);

/// Servers spread over the three partitions of a test topic.
pub const SERVERS: &str = "s01,s02,s03,s04,s05,s06,s07,s08,s09,s10,s11,s12";

/// (generation, rebalances, assigned partitions), as a member's `/metrics` say.
pub type GroupView = (i64, i64, i64);

/// One static member: its instance id, its `/metrics` address and its running process.
pub struct Member {
    pub id: String,
    pub addr: String,
    pub proc: Background,
}

fn spawn(sb: &Sandbox, id: &str, log_name: &str, addr: &str) -> Background {
    sb.spawn(
        log_name,
        &["consume", "--group-instance-id", id, "--metrics-addr", addr],
    )
}

impl Member {
    /// Starts member `id`, its log `<id>.log`.
    pub fn start(sb: &Sandbox, id: &str) -> Member {
        let addr = format!("127.0.0.1:{}", free_port());
        let proc = spawn(sb, id, id, &addr);
        Member {
            id: id.to_string(),
            addr,
            proc,
        }
    }

    /// Starts the member again with the same instance id and address (the old process must
    /// have ended), its log `<log_name>.log`.
    pub fn restart(&mut self, sb: &Sandbox, log_name: &str) {
        self.proc = spawn(sb, &self.id, log_name, &self.addr);
    }

    /// An unlabelled sample `metricsctl_consumer_<name>` of its `/metrics`.
    pub fn gauge(&self, name: &str) -> Option<i64> {
        quick_value(&self.addr, &format!("metricsctl_consumer_{name}")).map(|v| v as i64)
    }

    /// (generation, rebalances, assigned partitions) as its `/metrics` say.
    pub fn group_view(&self) -> Option<GroupView> {
        Some((
            self.gauge("group_generation")?,
            self.gauge("group_rebalances_total")?,
            self.gauge("assigned_partitions")?,
        ))
    }

    /// True when its last join made it the group's leader, as its log says.
    pub fn is_leader(&self) -> bool {
        let log = self.proc.log_text();
        let last_join = log.lines().rev().find(|l| l.contains(" joined as "));
        last_join.is_some_and(|l| l.contains("leader of"))
    }
}

/// Three static members `a`, `b`, `c` of the sandbox's group on its 3-partition topic (made
/// here), once the group has settled; and the generation it settled in.
pub fn three_members(sb: &Sandbox) -> (Vec<Member>, i64) {
    crate::common::kafka_wire::ensure_topic(&sb.brokers, &sb.topic);
    let members = vec![
        Member::start(sb, "a"),
        Member::start(sb, "b"),
        Member::start(sb, "c"),
    ];
    let generation = settled(&members.iter().collect::<Vec<_>>());
    (members, generation)
}

/// Waits until every member holds the same generation with one partition each, unchanged
/// for two seconds; returns the generation.
pub fn settled(members: &[&Member]) -> i64 {
    let mut last: Option<(Vec<GroupView>, Instant)> = None;
    let found = poll(Duration::from_secs(120), Duration::from_millis(200), || {
        let views: Option<Vec<_>> = members.iter().map(|m| m.group_view()).collect();
        let views = views?;
        let generation = views[0].0;
        let stable = views
            .iter()
            .all(|v| v.0 == generation && v.0 >= 0 && v.2 == 1);
        if !stable {
            last = None;
            return None;
        }
        match &last {
            Some((seen, since)) if *seen == views => {
                (since.elapsed() >= Duration::from_secs(2)).then_some(generation)
            }
            _ => {
                last = Some((views, Instant::now()));
                None
            }
        }
    });
    found.unwrap_or_else(|| {
        panic!(
            "the group did not settle; members: {:?}",
            members
                .iter()
                .map(|m| (m.id.clone(), m.group_view()))
                .collect::<Vec<_>>()
        )
    })
}

/// The messages a stopped producer sent, from its final line ("... reports made, N messages
/// sent, ...").
pub fn messages_sent(producer: &Background) -> u64 {
    producer
        .log_text()
        .lines()
        .find_map(|l| {
            l.split("reports made, ")
                .nth(1)?
                .split(" messages sent")
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| {
            panic!(
                "no final line in the producer's log:\n{}",
                producer.log_tail(10)
            )
        })
}
