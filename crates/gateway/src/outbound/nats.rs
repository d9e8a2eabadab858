//! NATS JetStream adapter of the gateway: queues create jobs
//! ([`NatsJobQueue`], port `JobQueue`) and consumes job results with a
//! durable consumer, so results published while the gateway was down are
//! answered when it is back.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, AckKind};
use cf_bus::pb::{CreateJob, JobResult, ReplyTo};
use cf_bus::subjects;
use cf_core::ditto::{CreateCommand, Reply};
use cf_core::ports::{AnswerSink, JobQueue, TransportError};
use cf_core::request::Outcome;
use futures::StreamExt;
use prost::Message;
use tracing::{info, warn};

use crate::service::Gateway;

/// Queues create jobs on the JetStream work queue.
#[derive(Clone)]
pub struct NatsJobQueue {
    js: jetstream::Context,
}

impl NatsJobQueue {
    /// A queue on `js`; the streams must exist (`cf_bus::ensure_topology`).
    pub fn new(js: jetstream::Context) -> Self {
        Self { js }
    }
}

impl JobQueue for NatsJobQueue {
    async fn submit(&self, command: &CreateCommand) -> Result<(), TransportError> {
        let job = CreateJob {
            reply: Some(ReplyTo::from(&command.reply)),
            operation: command.operation.as_str().to_owned(),
            value_json: command.value.to_string().into_bytes(),
            fingerprint: command.fingerprint.clone(),
        };
        let ack = self
            .js
            .publish(subjects::CREATE_JOBS, job.encode_to_vec().into())
            .await
            .map_err(|e| TransportError(format!("failed to publish the job: {e}")))?;
        ack.await
            .map_err(|e| TransportError(format!("the job was not stored: {e}")))?;
        Ok(())
    }
}

/// Answers every job result until the stream ends. Each result is
/// acknowledged only after its answer was handed to MQTT.
// TODO(gateway): acknowledge after the broker's PUBACK rather than after
// handing the answer to rumqttc's queue; a gateway killed in between loses
// that answer (the request's retry still gets it from the ledger).
///
/// # Errors
/// When the consumer cannot be created or its message stream fails.
pub async fn answer_results<Q, A>(
    js: jetstream::Context,
    gateway: Arc<Gateway<Q, A>>,
) -> Result<(), async_nats::Error>
where
    Q: JobQueue,
    A: AnswerSink,
{
    let stream = js.get_stream(subjects::RESULTS_STREAM).await?;
    let consumer: consumer::PullConsumer = stream
        .get_or_create_consumer(
            subjects::GATEWAY_CONSUMER,
            consumer::pull::Config {
                durable_name: Some(subjects::GATEWAY_CONSUMER.to_owned()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                max_ack_pending: 1024,
                ..Default::default()
            },
        )
        .await?;
    let mut messages = consumer.messages().await?;
    info!("consuming job results");
    while let Some(message) = messages.next().await {
        let message = message?;
        let gateway = Arc::clone(&gateway);
        tokio::spawn(async move {
            let ack = match decode_result(&message.payload) {
                Ok((reply, outcome)) => {
                    gateway.handle_result(&reply, &outcome).await;
                    AckKind::Ack
                }
                Err(e) => {
                    warn!(error = %e, "dropping a malformed job result");
                    AckKind::Term
                }
            };
            if let Err(e) = message.ack_with(ack).await {
                warn!(error = %e, "failed to acknowledge a job result");
            }
        });
    }
    Ok(())
}

fn decode_result(payload: &[u8]) -> Result<(Reply, Outcome), String> {
    let result = JobResult::decode(payload).map_err(|e| e.to_string())?;
    let reply = result.reply.ok_or("result without reply")?;
    let outcome = result.outcome.ok_or("result without outcome")?;
    let reply = Reply::try_from(reply).map_err(|e| e.to_string())?;
    let outcome = Outcome::try_from(outcome).map_err(|e| e.to_string())?;
    Ok((reply, outcome))
}
