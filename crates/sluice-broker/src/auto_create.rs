//! Topic auto-creation off the request path, as Kafka does it: a Metadata request naming an
//! unknown topic queues its creation and is answered at once with UNKNOWN_TOPIC_OR_PARTITION
//! (Kafka 4's answer); the client asks again and finds the topic once it exists.
//!
//! One task creates what is queued, in batches that share one journal write and one sync of
//! the data directory, checking for shutdown between batches. How much one request may queue
//! is `auto.create.topics.max.per.request`; how much may wait at once is [`QUEUE_MAX`].

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::ResponseError;
use sluice_partition::EveryInterval;
use tokio::sync::Notify;

use crate::cluster::rpc::{ControllerRequest, WireNewTopic};
use crate::config::BrokerConfig;
use crate::BrokerState;

/// The most topics waiting to be created at once; names beyond it are not queued.
pub(crate) const QUEUE_MAX: usize = 10_000;

/// The most partitions created in one batch, so that shutdown never waits long for one.
const BATCH_PARTITIONS_MAX: usize = 1_000;

/// How long one batch may wait for the controller and for this broker to apply it.
const CREATE_TIMEOUT: Duration = Duration::from_secs(15);

/// Creation failures are logged at most this often.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct Queue {
    order: VecDeque<String>,
    names: HashSet<String>,
}

/// The queue of topics to auto-create.
#[derive(Debug)]
pub(crate) struct AutoCreate {
    queue: Mutex<Queue>,
    wake: Notify,
    max_per_request: usize,
    failure_log: EveryInterval,
}

impl AutoCreate {
    pub fn new(config: &BrokerConfig) -> Self {
        Self {
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
            max_per_request: config.auto_create_topics_max_per_request,
            failure_log: EveryInterval::new(FAILURE_LOG_INTERVAL),
        }
    }

    /// Asks for one topic to be created; `already` is how many this request asked for before.
    /// Past `auto.create.topics.max.per.request`, or with [`QUEUE_MAX`] names waiting, the
    /// name is not queued (the client's next Metadata request may ask again).
    pub fn request(&self, name: &str, already: usize) {
        let mut queue = self.queue.lock().expect("auto-create queue lock");
        if queue.names.contains(name)
            || already >= self.max_per_request
            || queue.order.len() >= QUEUE_MAX
        {
            return;
        }
        queue.names.insert(name.to_string());
        queue.order.push_back(name.to_string());
        drop(queue);
        self.wake.notify_one();
    }

    /// Takes up to `max` queued names, leaving them marked pending until [`Self::done`].
    fn take(&self, max: usize) -> Vec<String> {
        let mut queue = self.queue.lock().expect("auto-create queue lock");
        let n = queue.order.len().min(max);
        queue.order.drain(..n).collect()
    }

    fn done(&self, names: &[String]) {
        let mut queue = self.queue.lock().expect("auto-create queue lock");
        for name in names {
            queue.names.remove(name);
        }
    }
}

/// Creates queued topics until shutdown.
pub(crate) async fn run(state: Arc<BrokerState>) {
    let mut shutdown = state.shutdown.clone();
    let partitions = state.config.num_partitions.max(1) as usize;
    let batch_max = (BATCH_PARTITIONS_MAX / partitions).max(1);
    loop {
        tokio::select! {
            _ = state.auto_create.wake.notified() => {}
            _ = shutdown.changed() => return,
        }
        loop {
            if *shutdown.borrow() {
                return;
            }
            let batch = state.auto_create.take(batch_max);
            if batch.is_empty() {
                break;
            }
            create_batch(&state, batch, partitions).await;
        }
    }
}

async fn create_batch(state: &Arc<BrokerState>, batch: Vec<String>, partitions: usize) {
    // As many as the descriptor budget allows; the rest fail, and are asked for again.
    let mut fit = batch.len();
    while fit > 0 {
        match state.descriptors.room_for_files(fit * partitions) {
            Ok(()) => break,
            Err(room) if fit == 1 => {
                if let Some(suppressed) = state.auto_create.failure_log.due() {
                    tracing::warn!(suppressed, "cannot auto-create topics: {room}");
                }
                fit = 0;
            }
            Err(_) => fit /= 2,
        }
    }
    let topics: Vec<WireNewTopic> = batch[..fit]
        .iter()
        .map(|name| WireNewTopic {
            name: name.clone(),
            topic_id: uuid::Uuid::new_v4(),
            num_partitions: partitions as i32,
            replication_factor: -1,
            assignments: Vec::new(),
            configs: Vec::new(),
            leader_epoch: 0,
        })
        .collect();
    let asked = topics.len();
    let outcomes = state
        .cluster
        .topic_request(ControllerRequest::CreateTopics { topics }, CREATE_TIMEOUT)
        .await
        .unwrap_or_else(|e| vec![Some((ResponseError::RequestTimedOut.code(), e)); asked]);
    let mut made = 0;
    for (name, outcome) in batch.iter().zip(&outcomes) {
        match outcome {
            None => {
                made += 1;
                if batch.len() <= 10 {
                    tracing::info!(topic = name, partitions, "auto-created topic");
                }
            }
            // Created meanwhile by a CreateTopics request: nothing to do.
            Some((code, _)) if *code == ResponseError::TopicAlreadyExists.code() => {}
            Some((code, message)) => {
                if let Some(suppressed) = state.auto_create.failure_log.due() {
                    tracing::warn!(
                        topic = name,
                        code,
                        message,
                        suppressed,
                        "cannot auto-create topic"
                    );
                }
            }
        }
    }
    if batch.len() > 10 {
        tracing::info!(
            requested = batch.len(),
            created = made,
            partitions_each = partitions,
            "auto-created topics"
        );
    }
    state.auto_create.done(&batch);
}
