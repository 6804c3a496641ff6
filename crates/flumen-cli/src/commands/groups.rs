//! `flumen groups`: list, describe (with per-partition lag), delete and reset-offsets.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;

use clap::Subcommand;
use flumen_client::admin::{IsolationLevel, OffsetAndMetadata, OffsetSpec};
use flumen_client::{Admin, TopicPartition};

use super::admin;
use crate::config::Settings;
use crate::error::{CliError, Result};
use crate::output::Table;

/// `flumen groups ...`
#[derive(Subcommand, Debug)]
pub enum GroupsCommand {
    /// List consumer groups with their state and type.
    List,
    /// Show a group's state, members and, per partition, committed offset, log end and lag.
    Describe {
        /// The group id.
        group: String,
    },
    /// Delete groups (they must have no active members).
    Delete {
        /// The group ids.
        #[arg(required = true)]
        groups: Vec<String>,
    },
    /// Set a group's committed offsets on a topic (the group must have no active members).
    ResetOffsets {
        /// The group id.
        group: String,
        /// The topic whose offsets to reset.
        #[arg(long)]
        topic: String,
        /// Only these partitions (repeatable; default all).
        #[arg(long = "partition", value_name = "N")]
        partitions: Vec<i32>,
        /// Where to: `earliest`, `latest`, or an offset number.
        #[arg(long, value_name = "earliest|latest|OFFSET")]
        to: ResetTo,
        /// Print the new offsets without committing them.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Target of `groups reset-offsets --to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetTo {
    /// The log start.
    Earliest,
    /// The log end.
    Latest,
    /// An absolute offset (clamped to the partition's range).
    Offset(i64),
}

impl std::str::FromStr for ResetTo {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "earliest" | "beginning" => Ok(ResetTo::Earliest),
            "latest" | "end" => Ok(ResetTo::Latest),
            n => n
                .parse::<i64>()
                .ok()
                .filter(|o| *o >= 0)
                .map(ResetTo::Offset)
                .ok_or_else(|| format!("expected earliest, latest or an offset, got {n:?}")),
        }
    }
}

/// Runs a `groups` command.
pub async fn run(cmd: GroupsCommand, settings: Settings) -> Result<ExitCode> {
    let admin = admin(settings).await?;
    match cmd {
        GroupsCommand::List => list(&admin).await,
        GroupsCommand::Describe { group } => describe(&admin, &group).await,
        GroupsCommand::Delete { groups } => delete(&admin, &groups).await,
        GroupsCommand::ResetOffsets {
            group,
            topic,
            partitions,
            to,
            dry_run,
        } => reset_offsets(&admin, &group, &topic, &partitions, to, dry_run).await,
    }
}

async fn list(admin: &Admin) -> Result<ExitCode> {
    let groups = admin.list_groups().await?;
    let mut table = Table::new(&["GROUP", "STATE", "TYPE", "PROTOCOL-TYPE"]);
    for g in groups {
        table.row(vec![
            g.group_id,
            g.state.unwrap_or_else(|| "-".into()),
            g.group_type.unwrap_or_else(|| "-".into()),
            if g.protocol_type.is_empty() {
                "-".into()
            } else {
                g.protocol_type
            },
        ]);
    }
    table.print()?;
    Ok(ExitCode::SUCCESS)
}

async fn describe(admin: &Admin, group: &str) -> Result<ExitCode> {
    let description = match admin.describe_groups(&[group]).await?.remove(group) {
        Some(Err(e)) if e.code() == Some(flumen_protocol::ErrorCode::GroupIdNotFound) => {
            return Err(CliError::UnknownGroup(group.to_owned()));
        }
        Some(result) => {
            result.map_err(|e| CliError::during(format!("describing group {group}"), e))?
        }
        None => {
            return Err(CliError::Client(format!(
                "the coordinator did not describe group {group}"
            )));
        }
    };
    let committed = admin
        .list_group_offsets(group, None)
        .await
        .map_err(|e| CliError::during(format!("fetching the offsets of group {group}"), e))?;
    if description.state.eq_ignore_ascii_case("Dead") && committed.is_empty() {
        return Err(CliError::UnknownGroup(group.to_owned()));
    }
    println!(
        "Group: {}\tState: {}\tProtocol: {}\tMembers: {}\tCoordinator: {} ({})",
        description.group_id,
        description.state,
        if description.protocol.is_empty() {
            "-"
        } else {
            &description.protocol
        },
        description.members.len(),
        description.coordinator.id,
        description.coordinator.addr(),
    );

    // Every partition with a commit or an owner, with who owns it.
    let mut owner: BTreeMap<TopicPartition, (String, String, String)> = BTreeMap::new();
    for m in &description.members {
        for tp in &m.assignment {
            owner.insert(
                tp.clone(),
                (
                    m.member_id.clone(),
                    m.client_host.clone(),
                    m.client_id.clone(),
                ),
            );
        }
    }
    let partitions: BTreeSet<TopicPartition> = committed
        .keys()
        .cloned()
        .chain(owner.keys().cloned())
        .collect();
    let specs: Vec<(TopicPartition, OffsetSpec)> = partitions
        .iter()
        .map(|tp| (tp.clone(), OffsetSpec::Latest))
        .collect();
    let ends = admin
        .list_offsets(&specs, IsolationLevel::ReadUncommitted)
        .await?;

    let mut table = Table::new(&[
        "TOPIC",
        "PARTITION",
        "CURRENT-OFFSET",
        "LOG-END-OFFSET",
        "LAG",
        "CONSUMER-ID",
        "HOST",
        "CLIENT-ID",
    ]);
    let mut total_lag = 0i64;
    for tp in &partitions {
        let current = committed
            .get(tp)
            .and_then(|r| r.as_ref().ok())
            .map(|o| o.offset);
        let end = ends.get(tp).and_then(|r| r.as_ref().ok()).map(|o| o.offset);
        let lag = match (current, end) {
            (Some(c), Some(e)) if c >= 0 => Some((e - c).max(0)),
            _ => None,
        };
        total_lag += lag.unwrap_or(0);
        let (member, host, client) = owner
            .get(tp)
            .cloned()
            .unwrap_or_else(|| ("-".into(), "-".into(), "-".into()));
        let show = |v: Option<i64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
        table.row(vec![
            tp.topic.clone(),
            tp.partition.to_string(),
            show(current.filter(|c| *c >= 0)),
            show(end),
            show(lag),
            member,
            host,
            client,
        ]);
    }
    if partitions.is_empty() {
        println!("No committed offsets and no assigned partitions.");
    } else {
        table.print()?;
        println!("Total lag: {total_lag}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn delete(admin: &Admin, groups: &[String]) -> Result<ExitCode> {
    let refs: Vec<&str> = groups.iter().map(String::as_str).collect();
    let results = admin.delete_groups(&refs).await?;
    let mut failed = 0;
    for (group, result) in results {
        match result {
            Ok(()) => eprintln!("Deleted group {group}."),
            Err(e) => {
                failed += 1;
                eprintln!(
                    "flumen: {}",
                    CliError::during(format!("deleting group {group}"), e)
                );
            }
        }
    }
    if failed > 0 {
        return Err(CliError::Partial(format!(
            "{failed} of {} groups not deleted",
            groups.len()
        )));
    }
    Ok(ExitCode::SUCCESS)
}

async fn reset_offsets(
    admin: &Admin,
    group: &str,
    topic: &str,
    only: &[i32],
    to: ResetTo,
    dry_run: bool,
) -> Result<ExitCode> {
    let description = admin.describe_topic(topic).await?;
    let mut partitions: Vec<TopicPartition> = description
        .partitions
        .iter()
        .map(|p| TopicPartition::new(topic, p.partition))
        .filter(|tp| only.is_empty() || only.contains(&tp.partition))
        .collect();
    partitions.sort();
    for p in only {
        if !partitions.iter().any(|tp| tp.partition == *p) {
            return Err(CliError::Usage(format!(
                "topic {topic} has no partition {p} (it has {})",
                description.partitions.len()
            )));
        }
    }
    if let Some(Ok(g)) = admin.describe_groups(&[group]).await?.remove(group)
        && !g.members.is_empty()
    {
        return Err(CliError::Usage(format!(
            "group {group} has {} active member(s); stop its consumers before resetting offsets",
            g.members.len()
        )));
    }

    let bounds = |spec: OffsetSpec| {
        let specs: Vec<_> = partitions.iter().map(|tp| (tp.clone(), spec)).collect();
        async move {
            admin
                .list_offsets(&specs, IsolationLevel::ReadUncommitted)
                .await
        }
    };
    let earliest = bounds(OffsetSpec::Earliest).await?;
    let latest = bounds(OffsetSpec::Latest).await?;
    let mut new_offsets = Vec::new();
    for tp in &partitions {
        let lookup = |m: &BTreeMap<
            TopicPartition,
            flumen_client::Result<flumen_client::admin::ListedOffset>,
        >|
         -> Result<i64> {
            match m.get(tp) {
                Some(Ok(o)) => Ok(o.offset),
                Some(Err(e)) => Err(CliError::Client(format!("listing offsets of {tp}: {e}"))),
                None => Err(CliError::Client(format!("no offsets listed for {tp}"))),
            }
        };
        let (lo, hi) = (lookup(&earliest)?, lookup(&latest)?);
        let offset = match to {
            ResetTo::Earliest => lo,
            ResetTo::Latest => hi,
            ResetTo::Offset(n) => n.clamp(lo, hi),
        };
        new_offsets.push((tp.clone(), OffsetAndMetadata::new(offset)));
    }

    let mut table = Table::new(&["TOPIC", "PARTITION", "NEW-OFFSET"]);
    for (tp, o) in &new_offsets {
        table.row(vec![
            tp.topic.clone(),
            tp.partition.to_string(),
            o.offset.to_string(),
        ]);
    }
    table.print()?;
    if dry_run {
        eprintln!("Dry run: nothing committed.");
        return Ok(ExitCode::SUCCESS);
    }
    let results = admin
        .alter_group_offsets(group, &new_offsets)
        .await
        .map_err(|e| CliError::during(format!("committing offsets for group {group}"), e))?;
    let failures: Vec<String> = results
        .into_iter()
        .filter_map(|(tp, r)| r.err().map(|e| format!("{tp}: {e}")))
        .collect();
    if !failures.is_empty() {
        return Err(CliError::Client(format!(
            "resetting offsets of group {group} failed for {}",
            failures.join("; ")
        )));
    }
    eprintln!(
        "Reset {} partition(s) of {topic} for group {group}.",
        new_offsets.len()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_targets_parse() {
        assert_eq!("earliest".parse(), Ok(ResetTo::Earliest));
        assert_eq!("latest".parse(), Ok(ResetTo::Latest));
        assert_eq!("42".parse(), Ok(ResetTo::Offset(42)));
        assert!("-1".parse::<ResetTo>().is_err());
        assert!("soon".parse::<ResetTo>().is_err());
    }
}
