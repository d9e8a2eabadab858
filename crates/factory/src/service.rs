//! The factory's decisions for one create job: answer a retry from the
//! ledger, wait for a duplicate that is still being worked on, resume a job
//! that a crash interrupted, or do the work. Generic over the ports.

use cf_core::ports::{
    ContainerEvent, ContainerRuntime, ContainerState, EventSink, LedgerEntry, LedgerError,
    RequestLedger,
};
use cf_core::request::{CreateRequest, Operation, Outcome};
use cf_core::{ApiError, ContainerId, CorrelationId};
use serde_json::Value;
use tracing::{info, warn, Span};

/// A create job as the factory receives it.
pub struct Job {
    /// Stable identity of the job across redeliveries.
    pub id: u64,
    /// The request's correlation-id.
    pub correlation_id: CorrelationId,
    /// The operation.
    pub operation: Operation,
    /// The Ditto message value.
    pub value: Value,
    /// The request's fingerprint.
    pub fingerprint: String,
}

/// What to do with a job.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Answer with this outcome and acknowledge the job.
    Answer(Outcome),
    /// Another job with the same correlation-id is being worked on; try
    /// this one again later.
    Busy,
}

/// Carries out create jobs exactly once per correlation-id.
pub struct Factory<L, R, E> {
    ledger: L,
    runtime: R,
    events: E,
}

impl<L: RequestLedger, R: ContainerRuntime, E: EventSink> Factory<L, R, E> {
    /// A factory remembering requests in `ledger`, creating on `runtime`
    /// and telling `events` about state changes.
    pub fn new(ledger: L, runtime: R, events: E) -> Self {
        Self {
            ledger,
            runtime,
            events,
        }
    }

    /// The runtime, for the exit watcher and teardown.
    pub fn runtime(&self) -> &R {
        &self.runtime
    }

    /// Decides and, when it is this job's turn, does the work.
    ///
    /// # Errors
    /// [`LedgerError`] when the ledger cannot be read or written; the job
    /// should then be retried.
    pub async fn handle(&self, job: &Job) -> Result<Decision, LedgerError> {
        let request = match CreateRequest::from_value(job.operation, &job.value) {
            Ok(r) => r,
            Err(e) => return Ok(Decision::Answer(Outcome::Failed(e))),
        };
        let fresh = LedgerEntry {
            fingerprint: job.fingerprint.clone(),
            container_id: ContainerId::generate(),
            job: job.id,
            outcome: None,
        };
        let mut entry = self
            .ledger
            .claim(&job.correlation_id, fresh.clone())
            .await?;
        if entry.fingerprint != job.fingerprint {
            let message = format!(
                "correlation-id {} was already used for a different request",
                job.correlation_id
            );
            return Ok(Decision::Answer(Outcome::Failed(ApiError::conflict(
                message,
            ))));
        }
        if let Some(outcome) = entry.outcome {
            info!("repeated request; answering as before");
            return Ok(Decision::Answer(outcome));
        }
        if entry.job != job.id {
            return Ok(Decision::Busy);
        }
        let id = entry.container_id;
        Span::current().record("container_id", tracing::field::display(id));
        if entry != fresh {
            info!("resuming an interrupted job");
            if let Err(e) = self.runtime.purge(id).await {
                warn!(error = %e, "failed to clear the interrupted attempt");
                let outcome = Outcome::Failed(e.into());
                return Ok(Decision::Answer(outcome));
            }
        }
        let outcome = self.create(id, &request, &job.correlation_id).await;
        entry.outcome = Some(outcome.clone());
        self.ledger.settle(&job.correlation_id, &entry).await?;
        Ok(Decision::Answer(outcome))
    }

    /// Records that a container's task exited and says so.
    pub async fn handle_exit(&self, id: ContainerId, exit_code: u32) {
        if let Err(e) = self.runtime.settle_exit(id, exit_code).await {
            warn!(container_id = %id, error = %e, "failed to settle an exited task");
        }
        let mut event = event(id, ContainerState::Exited, None);
        event.exit_code = Some(exit_code);
        self.events.publish(event).await;
    }

    async fn create(
        &self,
        id: ContainerId,
        request: &CreateRequest,
        cid: &CorrelationId,
    ) -> Outcome {
        if let Err(e) = self.runtime.create(id, request).await {
            return Outcome::Failed(e.into());
        }
        self.events
            .publish(event(id, ContainerState::Created, Some(cid)))
            .await;
        if !request.start {
            return Outcome::Created(id);
        }
        match self.runtime.start(id).await {
            Ok(()) => {
                self.events
                    .publish(event(id, ContainerState::Running, Some(cid)))
                    .await;
                Outcome::Created(id)
            }
            Err(e) => {
                let mut error = ApiError::from(e);
                error.message = format!(
                    "container {id} was created but failed to start: {}",
                    error.message
                );
                let mut stopped = event(id, ContainerState::Stopped, Some(cid));
                stopped.error = Some(error.message.clone());
                self.events.publish(stopped).await;
                Outcome::Failed(error)
            }
        }
    }
}

fn event(id: ContainerId, state: ContainerState, cid: Option<&CorrelationId>) -> ContainerEvent {
    ContainerEvent {
        container_id: id,
        state,
        exit_code: None,
        error: None,
        correlation_id: cid.cloned(),
    }
}

#[cfg(test)]
mod tests;
