//! Ports: what the services need from the outside world, in domain terms.
//! Adapters in the gateway and factory crates implement them.

use std::future::Future;

use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::ids::{ContainerId, ContainerName, CorrelationId};
use crate::request::{CreateRequest, Outcome};

/// What the ledger remembers about one correlation-id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Fingerprint of the request first seen with this correlation-id.
    pub fingerprint: String,
    /// The container ID reserved for it.
    pub container_id: ContainerId,
    /// The job that owns the work; a redelivery of the same job resumes it.
    pub job: u64,
    /// The answer, once the work is done.
    pub outcome: Option<Outcome>,
}

/// A ledger failure: the store could not be reached or answered nonsense.
#[derive(Debug, thiserror::Error)]
#[error("request ledger failed: {0}")]
pub struct LedgerError(pub String);

/// Remembers requests by correlation-id so that retries and redeliveries are
/// answered once, with one container.
pub trait RequestLedger: Send + Sync + 'static {
    /// Records `entry` unless the correlation-id is known; returns the entry
    /// that is recorded afterwards (the existing one if there was one).
    ///
    /// # Errors
    /// [`LedgerError`] when the store fails.
    fn claim(
        &self,
        id: &CorrelationId,
        entry: LedgerEntry,
    ) -> impl Future<Output = Result<LedgerEntry, LedgerError>> + Send;

    /// Stores the final entry of a correlation-id.
    ///
    /// # Errors
    /// [`LedgerError`] when the store fails.
    fn settle(
        &self,
        id: &CorrelationId,
        entry: &LedgerEntry,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;
}

/// Why creating or starting a container failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// Another live container has this name.
    #[error("container name {name} is already used by container {holder}")]
    NameInUse {
        /// The name asked for.
        name: ContainerName,
        /// The container that has it.
        holder: ContainerId,
    },
    /// A host port of the configuration is taken.
    #[error(
        "config.portMappings[{index}].hostPort: host port {port}/{proto} is already in use{by}"
    )]
    PortInUse {
        /// Index of the mapping in the request.
        index: usize,
        /// The host port.
        port: u16,
        /// `tcp` or `udp`.
        proto: &'static str,
        /// ` by container <id>` when a container of ours holds it.
        by: String,
    },
    /// The image could not be pulled or unpacked.
    #[error("failed to pull image {image}: {reason}")]
    Pull {
        /// The image reference.
        image: String,
        /// The cause.
        reason: String,
    },
    /// containerd, the network or the filesystem failed.
    #[error("{context}: {reason}")]
    Execution {
        /// What was being done.
        context: String,
        /// The cause.
        reason: String,
    },
}

impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> Self {
        match e {
            RuntimeError::NameInUse { .. } | RuntimeError::PortInUse { .. } => {
                ApiError::conflict(e.to_string())
            }
            RuntimeError::Pull { .. } | RuntimeError::Execution { .. } => {
                ApiError::execution(e.to_string())
            }
        }
    }
}

/// Creates and starts containers.
pub trait ContainerRuntime: Send + Sync + 'static {
    /// Pulls the image if needed and creates container `id`. On failure
    /// nothing of `id` is left behind.
    ///
    /// # Errors
    /// [`RuntimeError::NameInUse`] or [`RuntimeError::PortInUse`] when the
    /// request conflicts with a live container, [`RuntimeError::Pull`] when
    /// the image cannot be had, [`RuntimeError::Execution`] otherwise.
    fn create(
        &self,
        id: ContainerId,
        request: &CreateRequest,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Starts container `id` and returns once its task runs. On failure the
    /// container stays, with the cause recorded in its state.
    ///
    /// # Errors
    /// [`RuntimeError::PortInUse`] when a host port got taken meanwhile,
    /// [`RuntimeError::Execution`] otherwise.
    fn start(&self, id: ContainerId) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Records that the task of container `id` exited with `exit_code`:
    /// releases the task and its network and marks the container exited.
    ///
    /// # Errors
    /// [`RuntimeError::Execution`] when the task or network could not be
    /// released or the state not recorded.
    fn settle_exit(
        &self,
        id: ContainerId,
        exit_code: u32,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Removes whatever an interrupted attempt left of container `id`; a
    /// container that does not exist is not an error.
    ///
    /// # Errors
    /// [`RuntimeError::Execution`] when something could not be removed.
    fn purge(&self, id: ContainerId) -> impl Future<Output = Result<(), RuntimeError>> + Send;
}

/// Queuing a job or publishing an answer failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TransportError(pub String);

/// Hands accepted create commands to the factory, durably.
pub trait JobQueue: Send + Sync + 'static {
    /// Queues `command`; returns once the queue has stored it.
    ///
    /// # Errors
    /// [`TransportError`] when the queue did not confirm the job.
    fn submit(
        &self,
        command: &crate::ditto::CreateCommand,
    ) -> impl Future<Output = Result<(), TransportError>> + Send;
}

/// Publishes answers to the client.
pub trait AnswerSink: Send + Sync + 'static {
    /// Publishes `answer` (at least once).
    ///
    /// # Errors
    /// [`TransportError`] when the answer could not be handed over.
    fn publish(
        &self,
        answer: crate::ditto::Answer,
    ) -> impl Future<Output = Result<(), TransportError>> + Send;
}

/// A container's lifecycle state, in Kanto's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerState {
    /// Created, no task.
    Created,
    /// Its task runs.
    Running,
    /// Its start failed, or it was stopped.
    Stopped,
    /// Its process ended by itself.
    Exited,
}

impl ContainerState {
    /// The state's wire name, e.g. `RUNNING`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "CREATED",
            Self::Running => "RUNNING",
            Self::Stopped => "STOPPED",
            Self::Exited => "EXITED",
        }
    }
}

/// A container changed state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEvent {
    /// The container.
    pub container_id: ContainerId,
    /// Its new state.
    pub state: ContainerState,
    /// The exit code, for [`ContainerState::Exited`].
    pub exit_code: Option<u32>,
    /// Why, for [`ContainerState::Stopped`] after a failure.
    pub error: Option<String>,
    /// The request that caused the change, if one did.
    pub correlation_id: Option<CorrelationId>,
}

/// Tells the rest of the system about container state changes.
pub trait EventSink: Send + Sync + 'static {
    /// Publishes `event`. Best effort: a lost event never fails the
    /// operation that caused it, so implementations log their failures.
    fn publish(&self, event: ContainerEvent) -> impl Future<Output = ()> + Send;
}
