//! The broker's metadata publisher (Kafka's `BrokerMetadataPublisher`): the cluster metadata
//! image, replayed from the metadata log, is the truth about topics; this task makes the
//! data directory follow it. It creates the logs of the topics and partitions the image
//! holds (with the image's topic ids and configs), removes those the image no longer holds,
//! and tells every partition who leads it and in which leader epoch, so that handlers answer
//! NOT_LEADER_OR_FOLLOWER for the partitions this broker does not lead.
//!
//! It also empties the log of a partition whose replicas no longer include this broker
//! (a reassignment moved it away), as Kafka deletes a stray replica's log.
//!
//! Removing is the one step that can lose data, so it waits until the image has replayed
//! this broker's own registration (an image at least as new as the cluster when this
//! process joined it: a topic missing from it was deleted, not yet unseen), and until the
//! topics the data directory held before it joined a cluster have been given to the
//! controller (the migration below). The index of the last image applied completely is
//! published; the broker counts as caught up (and may be unfenced) only once it is past its
//! registration, and a topic request is answered once its change is published here.
//!
//! Migration: a data directory from before the metadata log (or a single node's topics in
//! `topics.json`) holds topics the image does not know. Once this broker is registered and
//! unfenced, each such topic is created through the controller with its own id, partition
//! count and configs, all its partitions on this broker; then `metadata-migrated` is written
//! in the data directory, naming the cluster's id, and removals may start. A data directory
//! whose marker names another cluster (pointed at a new quorum) removes nothing, and a
//! pre-cluster topic whose name the cluster already uses stops the migration: both are for
//! an operator to decide.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use sluice_metadata::image::{MetadataImage, PartitionRegistration};
use sluice_metadata::records::RESOURCE_TOPIC;
use sluice_partition::{Assignment, NewTopic, StorageError};
use uuid::Uuid;

use super::rpc::{ControllerReply, ControllerRequest, WireNewTopic};
use crate::BrokerState;

/// The file that says this data directory's own topics are in the cluster metadata.
pub(crate) const MIGRATED_FILE: &str = "metadata-migrated";
/// How often a publication that failed is tried again.
const RETRY: Duration = Duration::from_secs(1);
/// Failures are logged at most this often.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// What the publisher needs of one topic of the image.
#[derive(Debug, Clone)]
struct TopicPlan {
    name: String,
    id: Uuid,
    /// Per partition, in order.
    partitions: Vec<PartitionRegistration>,
    configs: BTreeMap<String, String>,
}

fn plan_of(image: &MetadataImage) -> Vec<TopicPlan> {
    image
        .topics()
        .map(|t| TopicPlan {
            name: t.name.clone(),
            id: t.topic_id,
            // Partitions are numbered 0..n without gaps (the controller adds them in order).
            partitions: t.partitions.values().cloned().collect(),
            configs: image
                .configs(RESOURCE_TOPIC, &t.name)
                .cloned()
                .unwrap_or_default(),
        })
        .collect()
}

/// What one pass did not finish, to be tried again.
#[derive(Debug, Default)]
struct Pass {
    failures: Vec<String>,
    deleted: Vec<String>,
    /// Topics of which this broker became, or stopped being, the leader of some partition.
    led_now: HashSet<String>,
}

/// Makes the data directory follow `plan`. `may_remove`: the image is new enough, and the
/// directory's own topics migrated, for topics missing from it to be removed.
fn apply(state: &BrokerState, plan: &[TopicPlan], may_remove: bool) -> Pass {
    let replicas = &state.replicas;
    let mut pass = Pass::default();
    let mut create = Vec::new();
    for t in plan {
        match replicas.topic(&t.name) {
            Some(local) if local.id != t.id => {
                // Deleted and created again while this broker was away: the local log is
                // the old topic's.
                if !may_remove {
                    continue;
                }
                match replicas.delete_topic(&t.name) {
                    Ok(()) => {
                        pass.deleted.push(t.name.clone());
                        create.push(t);
                    }
                    Err(e) => pass
                        .failures
                        .push(format!("removing the old log of {}: {e}", t.name)),
                }
            }
            Some(local) => {
                if local.partitions.len() < t.partitions.len() {
                    if let Err(e) =
                        replicas.create_partitions(&t.name, t.partitions.len() as i32, false)
                    {
                        pass.failures
                            .push(format!("adding partitions to {}: {e}", t.name));
                    }
                }
                if local.overrides != t.configs {
                    let configs = t.configs.clone();
                    let altered = replicas.alter_topic_config::<StorageError>(
                        &t.name,
                        |_, _| Ok(configs),
                        false,
                    );
                    if let Err(e) = altered {
                        pass.failures
                            .push(format!("applying the configs of {}: {e}", t.name));
                    }
                }
            }
            None => create.push(t),
        }
    }
    if !create.is_empty() {
        let new: Vec<NewTopic> = create
            .iter()
            .map(|t| NewTopic {
                name: t.name.clone(),
                partitions: t.partitions.len() as i32,
                overrides: t.configs.clone(),
                id: Some(t.id),
            })
            .collect();
        for (t, result) in create.iter().zip(replicas.create_topics(new, false)) {
            match result {
                Ok(_) => tracing::debug!(topic = t.name, "created the topic's logs"),
                Err(StorageError::TopicExists(_)) => {}
                Err(e) => pass
                    .failures
                    .push(format!("creating the logs of {}: {e}", t.name)),
            }
        }
    }
    let me = state.config.node_id;
    let now = crate::now_ms();
    for t in plan {
        let Some(local) = replicas.topic(&t.name).filter(|l| l.id == t.id) else {
            continue;
        };
        for (partition, p) in local.partitions.iter().zip(&t.partitions) {
            if p.leader_epoch < partition.leader_epoch() {
                // The log holds a newer epoch than the metadata gives: never serve it in an
                // older one.
                partition.set_no_leader();
                pass.failures.push(format!(
                    "{}-{}: leader epoch {} is older than the log's {}",
                    t.name,
                    partition.index(),
                    p.leader_epoch,
                    partition.leader_epoch()
                ));
                continue;
            }
            let changed = partition.assign(
                Assignment {
                    me,
                    leader: p.leader,
                    leader_epoch: p.leader_epoch,
                    partition_epoch: p.partition_epoch,
                    replicas: &p.replicas,
                    isr: &p.isr,
                    elr: &p.elr,
                },
                now,
            );
            if changed.is_some() {
                pass.led_now.insert(t.name.clone());
            }
            if may_remove && !p.replicas.contains(&me) {
                // Moved off this broker (a reassignment drained it): its records go, as
                // Kafka deletes a stray replica's log. Only from an image that knows this
                // broker's registration, as removals of topics.
                match replicas.remove_stray_records(partition, now) {
                    Ok(true) => tracing::info!(
                        topic = t.name,
                        partition = partition.index(),
                        "removed the records of a replica no longer on this broker"
                    ),
                    Ok(false) => {}
                    Err(e) => pass.failures.push(format!(
                        "removing the records of {}-{}, no longer on this broker: {e}",
                        t.name,
                        partition.index()
                    )),
                }
            }
        }
    }
    if may_remove {
        let known: HashSet<&str> = plan.iter().map(|t| t.name.as_str()).collect();
        for local in replicas.topics() {
            if known.contains(local.name.as_str()) {
                continue;
            }
            match replicas.delete_topic(&local.name) {
                Ok(()) => pass.deleted.push(local.name.clone()),
                Err(StorageError::UnknownTopic(_)) => {}
                Err(e) => pass
                    .failures
                    .push(format!("removing deleted topic {}: {e}", local.name)),
            }
        }
    }
    pass
}

/// Runs until shutdown: applies every new image, publishes its index, migrates the data
/// directory's own topics once.
pub(crate) async fn run(state: Arc<BrokerState>) {
    let cluster = state.cluster.clone();
    let mut changes = cluster.view.changes();
    let mut shutdown = state.shutdown.clone();
    let failure_log = sluice_partition::EveryInterval::new(FAILURE_LOG_INTERVAL);
    let mut retry = tokio::time::interval(RETRY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // The index first: the image read after it is at least as new, so publishing this
        // index never claims more than was applied.
        let index = cluster.view.last_applied().map_or(0, |l| l.index);
        let plan = cluster.view.read(plan_of);
        cluster
            .view
            .read(|image| state.throttle.refresh(image, state.config.node_id));
        let caught_up = cluster.registered_at().is_some_and(|at| index >= at);
        let same_cluster = cluster.joined_this_cluster();
        if caught_up && same_cluster == Some(false) {
            if let Some(suppressed) = failure_log.due() {
                tracing::error!(
                    suppressed,
                    "this data directory belongs to another cluster \
                    (its metadata-migrated names another cluster id): its topics are kept, \
                    none is removed"
                );
            }
        }
        let may_remove =
            caught_up && cluster.migrated.load(Ordering::Acquire) && same_cluster == Some(true);
        let worker = state.clone();
        let pass = tokio::task::spawn_blocking(move || apply(&worker, &plan, may_remove)).await;
        match pass {
            Ok(pass) => {
                for name in &pass.deleted {
                    tracing::info!(topic = name, "removed the logs of a deleted topic");
                    state.metrics.topic_deleted(name);
                    if state.groups.is_loaded() {
                        // Off this task: the group lock may be held by a caller waiting
                        // for this publisher.
                        let (state, name) = (state.clone(), name.clone());
                        tokio::task::spawn_blocking(move || {
                            let _ = state
                                .groups
                                .call(&state, |c, _| c.delete_topic_offsets(&name));
                        });
                    }
                }
                if pass.led_now.contains(crate::groups::OFFSETS_TOPIC)
                    && state.groups.begin_reload()
                {
                    // The groups of the partitions this broker now leads are its own, and
                    // those it no longer leads are not: load them as the logs hold them,
                    // off this task.
                    let state = state.clone();
                    tokio::task::spawn_blocking(move || {
                        if let Err(e) = state.groups.reload(&state) {
                            tracing::error!(error = %e, "cannot reload the group coordinator");
                        }
                    });
                }
                if pass.led_now.contains(crate::txn::TXN_TOPIC) && state.txns.begin_reload() {
                    // The same for the transactional ids, whose prepared transactions the
                    // new coordinator finishes.
                    let state = state.clone();
                    tokio::task::spawn_blocking(move || {
                        if let Err(e) = state.txns.reload(&state) {
                            tracing::error!(error = %e,
                                "cannot reload the transaction coordinator");
                        }
                    });
                }
                if pass.failures.is_empty() {
                    cluster.published.send_if_modified(|p| {
                        let moved = index > *p;
                        *p = (*p).max(index);
                        moved
                    });
                } else if let Some(suppressed) = failure_log.due() {
                    tracing::error!(failures = ?pass.failures, suppressed,
                        "the data directory does not follow the cluster metadata yet; retrying");
                }
            }
            Err(e) => tracing::error!(error = %e, "the metadata publisher panicked"),
        }
        if !cluster.migrated.load(Ordering::Acquire) && caught_up && cluster.unfenced() {
            migrate(&state).await;
        }
        tokio::select! {
            _ = changes.changed() => {}
            _ = retry.tick() => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

/// Gives the controller every topic of the data directory that the image does not name, on
/// this broker, with its own id; then records that it is done.
async fn migrate(state: &Arc<BrokerState>) {
    let cluster = &state.cluster;
    let node = cluster.node_id;
    let known: HashSet<String> = cluster
        .view
        .read(|image| image.topics().map(|t| t.name.clone()).collect());
    // Only what the directory held when this process opened it: a topic created since came
    // from the image, and one missing from it now was deleted.
    let candidates = cluster.migration_candidates();
    let topics: Vec<WireNewTopic> = state
        .replicas
        .topics()
        .into_iter()
        .filter(|t| candidates.contains(&t.id) && !known.contains(&t.name))
        .map(|t| WireNewTopic {
            name: t.name.clone(),
            topic_id: t.id,
            num_partitions: -1,
            replication_factor: -1,
            assignments: vec![vec![node]; t.partitions.len()],
            leader_epoch: t
                .partitions
                .iter()
                .map(|p| p.leader_epoch())
                .max()
                .unwrap_or(0),
            configs: t
                .overrides
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
        .collect();
    let clashes: Vec<String> = state
        .replicas
        .topics()
        .into_iter()
        .filter(|t| candidates.contains(&t.id) && known.contains(&t.name))
        .filter(|t| {
            cluster
                .view
                .read(|image| image.topic_by_name(&t.name).map(|i| i.topic_id))
                != Some(t.id)
        })
        .map(|t| t.name.clone())
        .collect();
    if !clashes.is_empty() {
        // Two data directories each with a topic of that name: which one is meant is for
        // an operator to decide. Nothing is removed meanwhile.
        tracing::error!(
            ?clashes,
            "this data directory's topics have the names of other \
            topics of the cluster; not joining them (removals of deleted topics wait)"
        );
        return;
    }
    let names: Vec<String> = topics.iter().map(|t| t.name.clone()).collect();
    if !topics.is_empty() {
        match cluster
            .client
            .call(ControllerRequest::CreateTopics { topics })
            .await
        {
            Ok(ControllerReply::Topics { outcomes, .. }) => {
                let failed: Vec<String> = names
                    .iter()
                    .zip(&outcomes)
                    .filter_map(|(name, o)| o.as_ref().map(|(c, m)| format!("{name}: {c} {m}")))
                    .collect();
                if !failed.is_empty() {
                    tracing::error!(
                        ?failed,
                        "cannot give the controller this data directory's \
                        topics; removals of deleted topics wait until they are"
                    );
                    return;
                }
                tracing::info!(
                    topics = names.len(),
                    "gave the controller this data directory's topics (migration to the \
                     cluster metadata)"
                );
            }
            Ok(other) => {
                tracing::warn!(?other, "migration: the controller answered unexpectedly");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "migration: cannot reach the controller; retrying");
                return;
            }
        }
    }
    let Some(cluster_id) = cluster
        .view
        .read(|image| image.cluster_id().map(str::to_string))
    else {
        return; // the first controller names it on its first tick
    };
    let dir = state.config.data_dir.clone();
    let id = cluster_id.clone();
    let node = state.config.node_id;
    match tokio::task::spawn_blocking(move || write_marker(&dir, &id, node)).await {
        Ok(Ok(())) => {
            *cluster.joined.lock().expect("cluster lock") = Some(cluster_id);
            cluster.migrated.store(true, Ordering::Release)
        }
        Ok(Err(e)) => tracing::error!(error = %e, "cannot write {MIGRATED_FILE}"),
        Err(e) => tracing::error!(error = %e, "writing {MIGRATED_FILE} panicked"),
    }
}

/// Writes the migration marker durably (file, then directory): the id of the cluster this
/// data directory belongs to from now on, and the node it belongs to in that cluster.
pub(crate) fn write_marker(dir: &Path, cluster_id: &str, node_id: i32) -> std::io::Result<()> {
    use std::io::Write;
    let path = dir.join(MIGRATED_FILE);
    let tmp = dir.join(format!("{MIGRATED_FILE}.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(format!("{cluster_id}\n{node_id}\n").as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// The cluster this data directory joined, if its own topics were already given to a
/// controller (an empty id: a marker from before ids were kept), and the node id it joined
/// as (`None`: a marker from before node ids were kept).
pub(crate) fn joined_cluster(dir: &Path) -> Option<(String, Option<i32>)> {
    let text = std::fs::read_to_string(dir.join(MIGRATED_FILE)).ok()?;
    let mut lines = text.lines().map(str::trim);
    let cluster = lines.next().unwrap_or_default().chars().take(255).collect();
    let node = lines.next().and_then(|n| n.parse().ok());
    Some((cluster, node))
}
