//! The gateway's decisions: reject, queue, or ignore an inbound message,
//! and answer finished jobs. Free of MQTT and NATS types.

use std::time::Duration;

use cf_core::ditto::{parse_inbound, Inbound, Reply};
use cf_core::ports::{AnswerSink, JobQueue};
use cf_core::request::Outcome;
use cf_core::{ApiError, ThingId};
use tracing::{debug, info, warn, Instrument};

/// How often queuing a job is tried before the request is answered 500.
const SUBMIT_ATTEMPTS: u32 = 5;

/// Turns inbound commands into jobs or answers.
pub struct Gateway<Q, A> {
    thing: ThingId,
    max_payload: usize,
    queue: Q,
    answers: A,
}

impl<Q: JobQueue, A: AnswerSink> Gateway<Q, A> {
    /// A gateway for `thing` that queues on `queue` and answers on `answers`.
    pub fn new(thing: ThingId, max_payload: usize, queue: Q, answers: A) -> Self {
        Self {
            thing,
            max_payload,
            queue,
            answers,
        }
    }

    /// The thing this gateway serves.
    pub fn thing(&self) -> &ThingId {
        &self.thing
    }

    /// Handles one inbound MQTT message. When this returns, the message is
    /// either queued durably or answered, so the caller may acknowledge it.
    pub async fn handle_message(&self, topic: &str, payload: &[u8]) {
        match parse_inbound(&self.thing, topic, payload, self.max_payload) {
            Inbound::Ignore => debug!(topic, "message ignored"),
            Inbound::Reject(reply, error) => {
                let span = request_span(&reply);
                async {
                    info!(error.code = error.code.as_str(), error.message = %error.message, "request rejected");
                    self.answer(&reply, &Outcome::Failed(error)).await;
                }
                .instrument(span)
                .await;
            }
            Inbound::Create(command) => {
                let span = request_span(&command.reply);
                async {
                    if let Err(e) = self.submit(&command).await {
                        let failure =
                            ApiError::execution(format!("failed to queue the request: {e}"));
                        self.answer(&command.reply, &Outcome::Failed(failure)).await;
                    }
                }
                .instrument(span)
                .await;
            }
        }
    }

    /// Answers a finished job.
    pub async fn handle_result(&self, reply: &Reply, outcome: &Outcome) {
        let span = request_span(reply);
        if let Outcome::Created(id) = outcome {
            span.record("container_id", tracing::field::display(id));
        }
        self.answer(reply, outcome).instrument(span).await;
    }

    /// Queues `command`, retrying with back-off while the queue is down.
    async fn submit(&self, command: &cf_core::ditto::CreateCommand) -> Result<(), String> {
        let mut delay = Duration::from_millis(100);
        let mut attempt = 1;
        loop {
            match self.queue.submit(command).await {
                Ok(()) => {
                    debug!("job queued");
                    return Ok(());
                }
                Err(e) if attempt == SUBMIT_ATTEMPTS => return Err(e.to_string()),
                Err(e) => warn!(attempt, error = %e, "queuing the job failed; retrying"),
            }
            tokio::time::sleep(delay).await;
            delay *= 2;
            attempt += 1;
        }
    }

    async fn answer(&self, reply: &Reply, outcome: &Outcome) {
        let Some(answer) = reply.render(outcome) else {
            debug!("no answer wanted (response-required is false)");
            return;
        };
        let topic = answer.topic.clone();
        match self.answers.publish(answer).await {
            Ok(()) => debug!(topic, "answer published"),
            Err(e) => warn!(topic, error = %e, "failed to publish the answer"),
        }
    }
}

fn request_span(reply: &Reply) -> tracing::Span {
    tracing::info_span!(
        "hono_message",
        // Debug-quoted: a rejected request may carry control characters.
        correlation_id = ?reply.correlation_id,
        request_id = ?reply.request_id,
        command = %reply.command,
        device_id = %reply.thing,
        container_id = tracing::field::Empty,
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use cf_core::ditto::{Answer, CreateCommand};
    use cf_core::ports::TransportError;
    use serde_json::{json, Value};

    use super::*;

    #[derive(Default)]
    struct RecordingQueue {
        jobs: Mutex<Vec<String>>,
        fail: bool,
    }

    impl JobQueue for RecordingQueue {
        async fn submit(&self, command: &CreateCommand) -> Result<(), TransportError> {
            if self.fail {
                return Err(TransportError("queue down".into()));
            }
            self.jobs
                .lock()
                .unwrap()
                .push(command.reply.correlation_id.clone());
            Ok(())
        }
    }

    #[derive(Default)]
    struct RecordingSink(Mutex<Vec<Answer>>);

    impl AnswerSink for RecordingSink {
        async fn publish(&self, answer: Answer) -> Result<(), TransportError> {
            self.0.lock().unwrap().push(answer);
            Ok(())
        }
    }

    fn gateway(fail: bool) -> Gateway<RecordingQueue, RecordingSink> {
        let queue = RecordingQueue {
            fail,
            ..Default::default()
        };
        let thing = ThingId::new("edge:device").unwrap();
        Gateway::new(thing, 1 << 20, queue, RecordingSink::default())
    }

    fn message(value: Value) -> Vec<u8> {
        json!({
            "topic": "edge/device/things/live/messages/create",
            "headers": {"correlation-id": "c1", "content-type": "application/json"},
            "path": "/features/ContainerFactory/inbox/messages/create",
            "value": value,
        })
        .to_string()
        .into_bytes()
    }

    #[tokio::test]
    async fn queues_valid_creates_without_answering() {
        let gw = gateway(false);
        let payload = message(json!({"imageRef": "busybox"}));
        gw.handle_message("command//edge:device/req/1/create", &payload)
            .await;
        assert_eq!(*gw.queue.jobs.lock().unwrap(), ["c1"]);
        assert!(gw.answers.0.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn answers_invalid_requests_without_queuing() {
        let gw = gateway(false);
        let payload = message(json!({"imageRef": 1}));
        gw.handle_message("command//edge:device/req/1/create", &payload)
            .await;
        assert!(gw.queue.jobs.lock().unwrap().is_empty());
        let answers = gw.answers.0.lock().unwrap();
        assert_eq!(answers[0].topic, "command//edge:device/res/1/400");
    }

    #[tokio::test(start_paused = true)]
    async fn answers_500_when_the_queue_stays_down() {
        let gw = gateway(true);
        let payload = message(json!({"imageRef": "busybox"}));
        gw.handle_message("command//edge:device/req/1/create", &payload)
            .await;
        let answers = gw.answers.0.lock().unwrap();
        assert_eq!(answers[0].topic, "command//edge:device/res/1/500");
    }
}
