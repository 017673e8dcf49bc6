//! The broker's side of membership, as Kafka's `BrokerLifecycleManager` runs it: register
//! with the active controller (a new incarnation id per process), heartbeat, report when
//! the metadata log has been replayed up to the registration (the controller then unfences
//! the broker), register again when the controller says the registration is gone or
//! replaced, and at shutdown ask for a controlled shutdown until the controller says it is
//! done (or a bound passes).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_metadata::codes;
use tokio::sync::watch;
use uuid::Uuid;

use super::rpc::{ControllerClient, ControllerReply, ControllerRequest, WireEndpoint};
use super::BrokerLifecycle;

/// How soon a request is tried again after the controller could not be reached, and how
/// often a fenced broker heartbeats (to be unfenced quickly once caught up).
const RETRY: Duration = Duration::from_millis(100);

pub(crate) struct BrokerLifecycleTask {
    pub node_id: i32,
    pub endpoint: WireEndpoint,
    /// Where this broker receives the metadata log, if it is not a voter.
    pub metadata_addr: Option<String>,
    pub heartbeat_interval: Duration,
    pub client: ControllerClient,
    /// The metadata log index the publisher has applied to this broker's partitions.
    pub published: watch::Receiver<u64>,
    pub state: Arc<Mutex<BrokerLifecycle>>,
    pub shutdown: watch::Receiver<bool>,
    pub controlled_shutdown_max: Duration,
    /// Where the epoch of this broker's registration is kept for its next process.
    pub epoch_file: std::path::PathBuf,
}

/// The file's layout: `{"version": 1, "node_id": N, "broker_epoch": E}`.
#[derive(serde::Serialize, serde::Deserialize)]
struct EpochFile {
    version: u32,
    node_id: i32,
    broker_epoch: i64,
}

/// The epoch this broker's previous process registered with, or -1 (none, another node's,
/// or unreadable: then the new process waits for the old session to expire, as a stranger
/// would).
fn read_previous_epoch(path: &std::path::Path, node_id: i32) -> i64 {
    let Ok(bytes) = std::fs::read(path) else {
        return -1;
    };
    match serde_json::from_slice::<EpochFile>(&bytes) {
        Ok(f) if f.version == 1 && f.node_id == node_id => f.broker_epoch,
        Ok(_) => -1,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e,
                "ignoring an unreadable broker epoch file");
            -1
        }
    }
}

/// Keeps `broker_epoch` for the next process (replaced atomically; not synced: a lost write
/// only makes the next process wait for the session, as without the file).
fn write_epoch(path: &std::path::Path, node_id: i32, broker_epoch: i64) {
    let file = EpochFile {
        version: 1,
        node_id,
        broker_epoch,
    };
    let tmp = path.with_extension("tmp");
    let written = serde_json::to_vec(&file)
        .map_err(std::io::Error::other)
        .and_then(|bytes| std::fs::write(&tmp, bytes))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        tracing::warn!(path = %path.display(), error = %e, "cannot keep the broker epoch");
    }
}

/// What to do after a heartbeat.
enum Next {
    Beat(Duration),
    Register,
}

impl BrokerLifecycleTask {
    fn update(&self, f: impl FnOnce(&mut BrokerLifecycle)) {
        f(&mut self.state.lock().expect("lifecycle lock"));
    }

    /// Records a failure, logging it when it differs from the last one.
    fn failed(&self, error: String) {
        let mut state = self.state.lock().expect("lifecycle lock");
        if state.last_error.as_deref() != Some(error.as_str()) {
            tracing::info!(
                node_id = self.node_id,
                error,
                "broker lifecycle: will retry"
            );
        }
        state.last_error = Some(error);
    }

    /// Asks the controller, giving up when shutdown starts (the controlled shutdown then
    /// asks again, within its own bound).
    async fn call(&self, request: ControllerRequest) -> Result<ControllerReply, String> {
        let mut shutdown = self.shutdown.clone();
        if *shutdown.borrow() {
            return Err("shutting down".to_string());
        }
        tokio::select! {
            reply = self.client.call(request) => {
                if matches!(
                    reply,
                    Ok(ControllerReply::Registered { .. } | ControllerReply::Heartbeat { .. })
                ) {
                    self.update(|s| s.last_ack_ms = Some(crate::now_ms()));
                }
                reply
            }
            _ = shutdown.changed() => Err("shutting down".to_string()),
        }
    }

    /// Waits `pause` unless shutdown starts first; returns whether it did.
    async fn pause(&mut self, pause: Duration) -> bool {
        if *self.shutdown.borrow() {
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => *self.shutdown.borrow(),
            _ = self.shutdown.changed() => true,
        }
    }

    pub(crate) async fn run(mut self) {
        let incarnation_id = Uuid::new_v4();
        let mut previous_broker_epoch = read_previous_epoch(&self.epoch_file, self.node_id);
        'register: loop {
            let (broker_epoch, log_index) = loop {
                let request = ControllerRequest::Register {
                    broker_id: self.node_id,
                    incarnation_id,
                    endpoints: vec![self.endpoint.clone()],
                    rack: None,
                    metadata_addr: self.metadata_addr.clone(),
                    previous_broker_epoch,
                };
                match self.call(request).await {
                    Ok(ControllerReply::Registered {
                        broker_epoch,
                        log_index,
                    }) => break (broker_epoch, log_index),
                    Ok(ControllerReply::Refused { code, message }) => {
                        self.failed(format!("registration refused ({code}): {message}"))
                    }
                    Ok(other) => self.failed(format!("registration answered {other:?}")),
                    Err(e) => self.failed(e),
                }
                if self.pause(RETRY).await {
                    return;
                }
            };
            tracing::info!(
                node_id = self.node_id,
                broker_epoch,
                %incarnation_id,
                "broker registered with the controller"
            );
            self.update(|s| {
                s.broker_epoch = Some(broker_epoch);
                s.registered_at = Some(log_index);
                s.fenced = true;
                s.last_error = None;
            });
            write_epoch(&self.epoch_file, self.node_id, broker_epoch);
            previous_broker_epoch = broker_epoch;
            loop {
                let next = self.heartbeat(broker_epoch, log_index, false).await;
                let pause = match next {
                    Next::Register => continue 'register,
                    Next::Beat(pause) => pause,
                };
                if self.pause(pause).await {
                    self.controlled_shutdown(broker_epoch, log_index).await;
                    return;
                }
            }
        }
    }

    /// One heartbeat, and when the next one is due.
    async fn heartbeat(&self, broker_epoch: i64, log_index: u64, want_shut_down: bool) -> Next {
        let caught_up = *self.published.borrow() >= log_index;
        let request = ControllerRequest::Heartbeat {
            broker_id: self.node_id,
            broker_epoch,
            caught_up,
            want_fence: false,
            want_shut_down,
            metadata_addr: self.metadata_addr.clone(),
        };
        match self.call(request).await {
            Ok(ControllerReply::Heartbeat {
                is_fenced,
                in_controlled_shutdown,
                ..
            }) => {
                let was_fenced = {
                    let mut state = self.state.lock().expect("lifecycle lock");
                    let was = state.fenced;
                    state.fenced = is_fenced;
                    state.in_controlled_shutdown = in_controlled_shutdown;
                    state.last_error = None;
                    was
                };
                if was_fenced && !is_fenced {
                    tracing::info!(node_id = self.node_id, broker_epoch, "broker unfenced");
                } else if !was_fenced && is_fenced && !want_shut_down {
                    tracing::warn!(node_id = self.node_id, broker_epoch, "broker fenced");
                }
                Next::Beat(if is_fenced {
                    RETRY
                } else {
                    self.heartbeat_interval
                })
            }
            Ok(ControllerReply::Refused { code, message })
                if code == codes::STALE_BROKER_EPOCH || code == codes::BROKER_ID_NOT_REGISTERED =>
            {
                tracing::warn!(
                    node_id = self.node_id,
                    broker_epoch,
                    code,
                    message,
                    "the controller no longer knows this registration; registering again"
                );
                self.update(|s| {
                    s.broker_epoch = None;
                    s.fenced = true;
                });
                Next::Register
            }
            Ok(ControllerReply::Refused { code, message }) => {
                self.failed(format!("heartbeat refused ({code}): {message}"));
                Next::Beat(RETRY)
            }
            Ok(other) => {
                self.failed(format!("heartbeat answered {other:?}"));
                Next::Beat(RETRY)
            }
            Err(e) => {
                self.failed(e);
                Next::Beat(RETRY)
            }
        }
    }

    /// Asks the controller to move this broker's leaderships away and fence it, until it
    /// says the broker may stop, or `controlled_shutdown_max` passes.
    async fn controlled_shutdown(&self, broker_epoch: i64, log_index: u64) {
        let deadline = tokio::time::Instant::now() + self.controlled_shutdown_max;
        loop {
            let request = ControllerRequest::Heartbeat {
                broker_id: self.node_id,
                broker_epoch,
                caught_up: *self.published.borrow() >= log_index,
                want_fence: false,
                want_shut_down: true,
                metadata_addr: self.metadata_addr.clone(),
            };
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let answer = tokio::time::timeout(left, self.client.call(request)).await;
            match answer.unwrap_or_else(|_| Err("timed out".to_string())) {
                Ok(ControllerReply::Heartbeat {
                    should_shut_down: true,
                    ..
                }) => {
                    tracing::info!(node_id = self.node_id, "controlled shutdown complete");
                    self.update(|s| {
                        s.fenced = true;
                        s.in_controlled_shutdown = true;
                    });
                    return;
                }
                Ok(ControllerReply::Refused { code, .. })
                    if code == codes::STALE_BROKER_EPOCH
                        || code == codes::BROKER_ID_NOT_REGISTERED =>
                {
                    return
                }
                _ => {}
            }
            if tokio::time::Instant::now() + RETRY > deadline {
                tracing::warn!(
                    node_id = self.node_id,
                    "controlled shutdown not confirmed by the controller in time; stopping"
                );
                return;
            }
            tokio::time::sleep(RETRY).await;
        }
    }
}
