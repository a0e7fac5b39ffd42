//! Which partitions this consumer reads: its share from the group (joining it), or the
//! `--partitions` named, refused when a live member of the same group owns them.

use log::info;

use super::super::CommandError;
use crate::kafka::{GroupMember, GroupTimeouts, KafkaAdmin, TopicInfo};
use crate::retrying::retry;
use crate::settings::{ConsumeSettings, SettingError, GROUP_SESSION_TIMEOUT};
use crate::shutdown::Shutdown;
use crate::telemetry;

/// Group timeouts: a member silent for the session timeout is removed and its partitions
/// move; a member whose loop made no step for the max step interval leaves. As in Java's
/// consumer, a rebalance waits as long for the members to rejoin: a member in a step that is
/// slow but within bounds is not dropped from the rebalance.
pub(super) fn group_timeouts(settings: &ConsumeSettings) -> GroupTimeouts {
    GroupTimeouts {
        session: GROUP_SESSION_TIMEOUT,
        rebalance: settings.max_step_interval,
        max_step_interval: settings.max_step_interval,
    }
}

/// This consumer's partitions of `topic`: its share from the group (joining it), or the
/// `--partitions` named.
pub(super) fn assignment(
    settings: &ConsumeSettings,
    topic: &TopicInfo,
    member: Option<&mut GroupMember>,
    source: &mut KafkaAdmin,
    shutdown: &Shutdown,
) -> Result<Vec<i32>, CommandError> {
    if let Some(member) = member {
        let partitions = retry("joining the consumer group", shutdown, || member.join())?;
        source.set_generation(member.generation());
        telemetry::consumer().assigned(&partitions, member.generation().map(|g| g.id));
        if partitions.is_empty() {
            info!(
                "no partition assigned: the group has more members than topic {} has \
                 partitions; waiting for a rebalance",
                settings.topic
            );
        }
        return Ok(partitions);
    }
    let wanted = settings.partitions.clone().unwrap_or_default();
    if let Some(missing) = wanted.iter().find(|p| !topic.partitions.contains(p)) {
        return Err(CommandError::Setting(SettingError {
            setting: "--partitions (KAFKA_PARTITIONS)".into(),
            problem: format!(
                "topic {} has no partition {missing} (it has {}); name existing partitions",
                settings.topic,
                join(&topic.partitions)
            ),
        }));
    }
    telemetry::consumer().assigned(&wanted, None);
    Ok(wanted)
}

/// `--partitions` reads outside group membership: refuse partitions a live member of the same
/// group owns, since both would read and window them.
pub(super) fn refuse_shared_partitions(
    settings: &ConsumeSettings,
    source: &mut KafkaAdmin,
    shutdown: &Shutdown,
) -> Result<(), CommandError> {
    let wanted = settings.partitions.clone().unwrap_or_default();
    let (_, members) = retry("describing the consumer group", shutdown, || {
        source.group_members()
    })?;
    for m in &members {
        let shared: Vec<i32> = m
            .partitions
            .iter()
            .copied()
            .filter(|p| wanted.contains(p))
            .collect();
        if !shared.is_empty() {
            return Err(CommandError::Setting(SettingError {
                setting: "--partitions (KAFKA_PARTITIONS)".into(),
                problem: format!(
                    "partition(s) {} of topic {} are read by live member {} (client {}, host {}) \
                     of group {}; use another group, or drop --partitions to join the group",
                    join(&shared),
                    settings.topic,
                    m.member_id,
                    m.client_id,
                    m.host,
                    settings.group
                ),
            }));
        }
    }
    Ok(())
}

fn join(partitions: &[i32]) -> String {
    partitions
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(",")
}
