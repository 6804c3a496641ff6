//! `flumen topics`: list, describe, create, delete and alter-config on the Admin API.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Subcommand;
use flumen_client::Admin;
use flumen_client::admin::{AlterConfigOp, ConfigResource, ConfigSource, NewTopic};

use super::admin;
use crate::config::Settings;
use crate::error::{CliError, Result};
use crate::output::Table;

/// `flumen topics ...`
#[derive(Subcommand, Debug)]
pub enum TopicsCommand {
    /// Print the name of every topic, one per line.
    List {
        /// Include Kafka's internal topics (__consumer_offsets, ...).
        #[arg(long)]
        internal: bool,
    },
    /// Print a topic's partitions (leader, replicas, ISR) and the configs set on it.
    Describe {
        /// The topic.
        name: String,
        /// Print every config, defaults included.
        #[arg(long)]
        all_configs: bool,
    },
    /// Create a topic.
    Create {
        /// The topic.
        name: String,
        /// Number of partitions (default: the broker's num.partitions).
        #[arg(short = 'p', long)]
        partitions: Option<i32>,
        /// Replication factor (default: the broker's default.replication.factor).
        #[arg(short = 'r', long)]
        replication_factor: Option<i16>,
        /// A topic config, e.g. --config retention.ms=3600000 (repeatable).
        #[arg(short = 'c', long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
        /// Succeed if the topic already exists.
        #[arg(long)]
        if_not_exists: bool,
    },
    /// Delete topics.
    Delete {
        /// The topics.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Set (KEY=VALUE) or remove (--delete KEY) configs of a topic.
    AlterConfig {
        /// The topic.
        name: String,
        /// Configs to set, e.g. retention.ms=86400000 cleanup.policy=compact.
        #[arg(value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Configs to remove (back to the broker default); repeatable.
        #[arg(long = "delete", value_name = "KEY")]
        delete: Vec<String>,
    },
}

/// Runs a `topics` command.
pub async fn run(cmd: TopicsCommand, settings: Settings) -> Result<ExitCode> {
    match cmd {
        TopicsCommand::List { internal } => list(settings, internal).await,
        TopicsCommand::Describe { name, all_configs } => {
            describe(settings, &name, all_configs).await
        }
        TopicsCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
            if_not_exists,
        } => {
            let mut topic = NewTopic::new(&name);
            if let Some(p) = partitions {
                topic = topic.partitions(p);
            }
            if let Some(r) = replication_factor {
                topic = topic.replication_factor(r);
            }
            for kv in &configs {
                let (k, v) = key_value(kv, "--config")?;
                topic = topic.config(k, v);
            }
            create(settings, topic, if_not_exists).await
        }
        TopicsCommand::Delete { names } => delete(settings, &names).await,
        TopicsCommand::AlterConfig { name, set, delete } => {
            let mut ops = Vec::new();
            for kv in &set {
                let (k, v) = key_value(kv, "config")?;
                ops.push(AlterConfigOp::Set(k.to_owned(), v.to_owned()));
            }
            ops.extend(delete.into_iter().map(AlterConfigOp::Delete));
            if ops.is_empty() {
                return Err(CliError::Usage(
                    "topics alter-config: give KEY=VALUE to set or --delete KEY to remove".into(),
                ));
            }
            alter_config(settings, &name, ops).await
        }
    }
}

/// Splits `KEY=VALUE`.
pub fn key_value<'a>(kv: &'a str, what: &str) -> Result<(&'a str, &'a str)> {
    kv.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| CliError::Usage(format!("{what} {kv:?}: expected KEY=VALUE")))
}

async fn list(settings: Settings, internal: bool) -> Result<ExitCode> {
    let admin = admin(settings).await?;
    let names = admin.list_topics(internal).await?;
    let mut out = String::new();
    for name in names {
        out.push_str(&name);
        out.push('\n');
    }
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

async fn describe(settings: Settings, name: &str, all_configs: bool) -> Result<ExitCode> {
    let admin = admin(settings).await?;
    let topic = admin.describe_topic(name).await?;
    let replication = topic.partitions.first().map_or(0, |p| p.replicas.len());
    println!(
        "Topic: {}\tTopicId: {}\tPartitions: {}\tReplicationFactor: {}{}",
        topic.name,
        topic.topic_id,
        topic.partitions.len(),
        replication,
        if topic.is_internal {
            "\tInternal: true"
        } else {
            ""
        }
    );
    let mut table = Table::new(&["PARTITION", "LEADER", "REPLICAS", "ISR", "OFFLINE"]);
    let ids = |v: &[i32]| v.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
    for p in &topic.partitions {
        table.row(vec![
            p.partition.to_string(),
            p.leader
                .map_or_else(|| "none".to_owned(), |l| l.to_string()),
            ids(&p.replicas),
            ids(&p.isr),
            ids(&p.offline_replicas),
        ]);
    }
    table.print()?;

    let resource = ConfigResource::Topic(name.to_owned());
    let configs = admin
        .describe_configs(std::slice::from_ref(&resource))
        .await?
        .remove(&resource)
        .unwrap_or_else(|| Ok(Vec::new()))
        .map_err(|e| CliError::during(format!("describing the configs of {name}"), e))?;
    let shown: Vec<_> = configs
        .into_iter()
        .filter(|c| all_configs || c.source == ConfigSource::DynamicTopic)
        .collect();
    if !shown.is_empty() {
        println!(
            "Configs{}:",
            if all_configs { "" } else { " set on the topic" }
        );
        for c in shown {
            let value = if c.sensitive {
                "<sensitive>".to_owned()
            } else {
                c.value.unwrap_or_else(|| "null".to_owned())
            };
            println!("  {}={}", c.name, value);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn create(settings: Settings, topic: NewTopic, if_not_exists: bool) -> Result<ExitCode> {
    let admin = admin(settings).await?;
    let name = topic.name.clone();
    match admin.create_topic(topic).await {
        Ok(created) => {
            wait_for(&admin, &name, true).await?;
            eprintln!(
                "Created topic {name} ({} partitions, replication factor {}).",
                created.num_partitions, created.replication_factor
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e)
            if if_not_exists
                && e.code() == Some(flumen_protocol::ErrorCode::TopicAlreadyExists) =>
        {
            eprintln!("Topic {name} already exists.");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(CliError::during(format!("creating topic {name}"), e)),
    }
}

/// How long `create` and `delete` wait for the change to show in metadata.
const PROPAGATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits until `name` exists with a leader for every partition (`present`) or is gone, so
/// that a command run right after `topics create` finds the topic.
pub async fn wait_for(admin: &Admin, name: &str, present: bool) -> Result<()> {
    let deadline = Instant::now() + PROPAGATION_TIMEOUT;
    let mut wait = Duration::from_millis(20);
    loop {
        let done = match admin.describe_topic(name).await {
            Ok(t) => present && t.partitions.iter().all(|p| p.leader.is_some()),
            Err(flumen_client::Error::UnknownTopic(_)) => !present,
            Err(e) if e.is_retriable() => false,
            Err(e) => return Err(CliError::client(e)),
        };
        if done {
            return Ok(());
        }
        if Instant::now() + wait > deadline {
            return Err(CliError::Client(format!(
                "topic {name} was {} but the metadata did not show it within {} s",
                if present { "created" } else { "deleted" },
                PROPAGATION_TIMEOUT.as_secs()
            )));
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_millis(500));
    }
}

async fn delete(settings: Settings, names: &[String]) -> Result<ExitCode> {
    let admin = admin(settings).await?;
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let results = admin.delete_topics(&refs).await?;
    let mut failed = 0;
    for (name, result) in results {
        match result {
            Ok(()) => {
                wait_for(&admin, &name, false).await?;
                eprintln!("Deleted topic {name}.");
            }
            Err(e) => {
                failed += 1;
                eprintln!(
                    "flumen: {}",
                    CliError::during(format!("deleting topic {name}"), e)
                );
            }
        }
    }
    if failed > 0 {
        return Err(CliError::Partial(format!(
            "{failed} of {} topics not deleted",
            names.len()
        )));
    }
    Ok(ExitCode::SUCCESS)
}

async fn alter_config(settings: Settings, name: &str, ops: Vec<AlterConfigOp>) -> Result<ExitCode> {
    let admin = admin(settings).await?;
    // An unknown topic gets a clear error rather than the broker's generic one.
    admin.describe_topic(name).await?;
    let resource = ConfigResource::Topic(name.to_owned());
    let results = admin
        .incremental_alter_configs(&[(resource.clone(), ops.clone())], false)
        .await?;
    match results.into_iter().next() {
        Some((_, Err(e))) => Err(CliError::during(
            format!("altering the configs of {name}"),
            e,
        )),
        _ => {
            for op in ops {
                match op {
                    AlterConfigOp::Set(k, v) => eprintln!("Set {k}={v} on topic {name}."),
                    AlterConfigOp::Delete(k) => eprintln!("Removed {k} from topic {name}."),
                    _ => {}
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The partition count of `name`, creating it with `partitions` partitions (and the
/// broker's default replication factor) when it does not exist.
pub async fn ensure_topic(admin: &Admin, name: &str, partitions: i32) -> Result<i32> {
    match admin.describe_topic(name).await {
        Ok(t) => return Ok(i32::try_from(t.partitions.len()).unwrap_or(i32::MAX)),
        Err(flumen_client::Error::UnknownTopic(_)) => {}
        Err(e) => return Err(CliError::client(e)),
    }
    match admin
        .create_topic(NewTopic::new(name).partitions(partitions))
        .await
    {
        Ok(_) => {}
        // Created meanwhile by someone else: fine.
        Err(e) if e.code() == Some(flumen_protocol::ErrorCode::TopicAlreadyExists) => {}
        Err(e) => return Err(CliError::during(format!("creating topic {name}"), e)),
    }
    wait_for(admin, name, true).await?;
    let t = admin.describe_topic(name).await?;
    Ok(i32::try_from(t.partitions.len()).unwrap_or(i32::MAX))
}
