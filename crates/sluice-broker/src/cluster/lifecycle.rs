//! The broker's side of membership, as Kafka's `BrokerLifecycleManager` runs it: register
//! with the active controller (a new incarnation id per process), heartbeat, report when
//! the metadata log has been replayed up to the registration (the controller then unfences
//! the broker), register again when the controller says the registration is gone or
//! replaced, and at shutdown ask for a controlled shutdown until the controller says it is
//! done (or a bound passes).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_metadata::codes;
use sluice_quorum::MetadataView;
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
    pub view: MetadataView,
    pub state: Arc<Mutex<BrokerLifecycle>>,
    pub shutdown: watch::Receiver<bool>,
    pub controlled_shutdown_max: Duration,
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
        'register: loop {
            let (broker_epoch, log_index) = loop {
                let request = ControllerRequest::Register {
                    broker_id: self.node_id,
                    incarnation_id,
                    endpoints: vec![self.endpoint.clone()],
                    rack: None,
                    metadata_addr: self.metadata_addr.clone(),
                };
                match self.client.call(request).await {
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
                s.fenced = true;
                s.last_error = None;
            });
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
        let caught_up = self
            .view
            .last_applied()
            .is_some_and(|applied| applied.index >= log_index);
        let request = ControllerRequest::Heartbeat {
            broker_id: self.node_id,
            broker_epoch,
            caught_up,
            want_fence: false,
            want_shut_down,
        };
        match self.client.call(request).await {
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
                caught_up: self
                    .view
                    .last_applied()
                    .is_some_and(|applied| applied.index >= log_index),
                want_fence: false,
                want_shut_down: true,
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
