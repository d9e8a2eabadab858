use std::collections::HashMap;
use std::sync::Mutex;

use cf_core::ports::{ContainerEvent, RuntimeError};
use cf_core::ErrorCode;
use serde_json::json;

use super::*;

#[derive(Default)]
struct InMemoryLedger(Mutex<HashMap<String, LedgerEntry>>);

impl RequestLedger for InMemoryLedger {
    async fn claim(
        &self,
        id: &CorrelationId,
        entry: LedgerEntry,
    ) -> Result<LedgerEntry, LedgerError> {
        let mut map = self.0.lock().unwrap();
        Ok(map.entry(id.to_string()).or_insert(entry).clone())
    }

    async fn settle(&self, id: &CorrelationId, entry: &LedgerEntry) -> Result<(), LedgerError> {
        self.0.lock().unwrap().insert(id.to_string(), entry.clone());
        Ok(())
    }
}

#[derive(Default)]
struct RecordingRuntime {
    calls: Mutex<Vec<String>>,
    fail_start: bool,
}

impl ContainerRuntime for RecordingRuntime {
    async fn create(&self, id: ContainerId, _: &CreateRequest) -> Result<(), RuntimeError> {
        self.calls.lock().unwrap().push(format!("create {id}"));
        Ok(())
    }

    async fn start(&self, id: ContainerId) -> Result<(), RuntimeError> {
        self.calls.lock().unwrap().push(format!("start {id}"));
        if self.fail_start {
            return Err(RuntimeError::Execution {
                context: "start".into(),
                reason: "boom".into(),
            });
        }
        Ok(())
    }

    async fn settle_exit(&self, id: ContainerId, code: u32) -> Result<(), RuntimeError> {
        self.calls.lock().unwrap().push(format!("exit {id} {code}"));
        Ok(())
    }

    async fn purge(&self, id: ContainerId) -> Result<(), RuntimeError> {
        self.calls.lock().unwrap().push(format!("purge {id}"));
        Ok(())
    }
}

#[derive(Default)]
struct RecordingEvents(Mutex<Vec<ContainerEvent>>);

impl EventSink for RecordingEvents {
    async fn publish(&self, event: ContainerEvent) {
        self.0.lock().unwrap().push(event);
    }
}

fn job(id: u64, cid: &str, start: bool) -> Job {
    let value = json!({"imageRef": "busybox", "start": start});
    Job {
        id,
        correlation_id: CorrelationId::new(cid).unwrap(),
        operation: Operation::Create,
        fingerprint: CreateRequest::from_value(Operation::Create, &value)
            .unwrap()
            .fingerprint(),
        value,
    }
}

type TestFactory = Factory<InMemoryLedger, RecordingRuntime, RecordingEvents>;

fn factory(fail_start: bool) -> TestFactory {
    let runtime = RecordingRuntime {
        fail_start,
        ..Default::default()
    };
    Factory::new(
        InMemoryLedger::default(),
        runtime,
        RecordingEvents::default(),
    )
}

fn states(f: &TestFactory) -> Vec<ContainerState> {
    f.events.0.lock().unwrap().iter().map(|e| e.state).collect()
}

fn created(d: Decision) -> ContainerId {
    match d {
        Decision::Answer(Outcome::Created(id)) => id,
        other => panic!("expected a created container, got {other:?}"),
    }
}

#[tokio::test]
async fn a_retry_gets_the_same_answer_and_no_second_container() {
    let f = factory(false);
    let first = created(f.handle(&job(1, "c", true)).await.unwrap());
    let again = created(f.handle(&job(2, "c", true)).await.unwrap());
    assert_eq!(first, again);
    assert_eq!(
        f.runtime.calls.lock().unwrap().len(),
        2,
        "one create and one start"
    );
}

#[tokio::test]
async fn a_reused_correlation_id_with_another_request_conflicts() {
    let f = factory(false);
    f.handle(&job(1, "c", true)).await.unwrap();
    let Decision::Answer(Outcome::Failed(e)) = f.handle(&job(2, "c", false)).await.unwrap() else {
        panic!("expected a conflict");
    };
    assert_eq!(e.code, ErrorCode::Conflict);
}

#[tokio::test]
async fn a_duplicate_in_progress_waits() {
    let f = factory(false);
    let pending = LedgerEntry {
        fingerprint: job(1, "c", true).fingerprint,
        container_id: ContainerId::generate(),
        job: 1,
        outcome: None,
    };
    f.ledger.0.lock().unwrap().insert("c".into(), pending);
    assert_eq!(f.handle(&job(2, "c", true)).await.unwrap(), Decision::Busy);
}

#[tokio::test]
async fn a_redelivered_job_clears_the_interrupted_attempt_and_keeps_its_id() {
    let f = factory(false);
    let reserved = ContainerId::generate();
    let pending = LedgerEntry {
        fingerprint: job(7, "c", false).fingerprint,
        container_id: reserved,
        job: 7,
        outcome: None,
    };
    f.ledger.0.lock().unwrap().insert("c".into(), pending);
    assert_eq!(
        created(f.handle(&job(7, "c", false)).await.unwrap()),
        reserved
    );
    let calls = f.runtime.calls.lock().unwrap();
    assert_eq!(
        *calls,
        [format!("purge {reserved}"), format!("create {reserved}")]
    );
}

#[tokio::test]
async fn a_failed_start_names_the_container_that_stays() {
    let f = factory(true);
    let Decision::Answer(Outcome::Failed(e)) = f.handle(&job(1, "c", true)).await.unwrap() else {
        panic!("expected a failure");
    };
    let calls = f.runtime.calls.lock().unwrap();
    let id = calls[0].trim_start_matches("create ");
    assert!(e.message.contains(id), "{}", e.message);
    assert_eq!(e.code, ErrorCode::ExecutionFailed);
}

#[tokio::test]
async fn tells_each_state_change_once() {
    let f = factory(false);
    let id = created(f.handle(&job(1, "c", true)).await.unwrap());
    f.handle(&job(2, "c", true)).await.unwrap();
    f.handle_exit(id, 3).await;
    assert_eq!(
        states(&f),
        [
            ContainerState::Created,
            ContainerState::Running,
            ContainerState::Exited
        ]
    );
    let events = f.events.0.lock().unwrap();
    assert_eq!(events[2].exit_code, Some(3));
    assert_eq!(
        events[0].correlation_id.as_ref().map(|c| c.as_str()),
        Some("c")
    );
}

#[tokio::test]
async fn a_failed_start_is_told_as_stopped_with_its_cause() {
    let f = factory(true);
    f.handle(&job(1, "c", true)).await.unwrap();
    assert_eq!(
        states(&f),
        [ContainerState::Created, ContainerState::Stopped]
    );
    let events = f.events.0.lock().unwrap();
    assert!(events[1]
        .error
        .as_deref()
        .unwrap_or_default()
        .contains("failed to start"));
}
