//! The job consumer: a durable JetStream pull consumer on the create-job
//! work queue. A job is acknowledged only after its result is stored on
//! the result stream, so a factory killed mid-job gets it redelivered.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, message::PublishMessage, AckKind};
use cf_bus::pb::{job_result, CreateJob, JobResult};
use cf_bus::subjects;
use cf_core::ports::{ContainerRuntime, EventSink, RequestLedger};
use cf_core::request::{Operation, Outcome};
use cf_core::{CorrelationId, ErrorCode};
use futures::StreamExt;
use prost::Message;
use tracing::{debug, error, info, warn, Instrument};

use crate::service::{Decision, Factory, Job};

/// How long a job may go without a sign of life before redelivery.
const ACK_WAIT: Duration = Duration::from_secs(15);
/// How often a job in progress says it is alive.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// Retry delay of a duplicate whose original is still being worked on.
const BUSY_RETRY: Duration = Duration::from_millis(250);
/// Retry delay when the ledger could not be reached.
const LEDGER_RETRY: Duration = Duration::from_secs(2);

/// Works on create jobs until the consumer's stream ends.
///
/// # Errors
/// When the consumer cannot be created or its message stream fails.
pub async fn consume_jobs<L, R, E>(
    js: jetstream::Context,
    factory: Arc<Factory<L, R, E>>,
    concurrency: usize,
) -> Result<(), async_nats::Error>
where
    L: RequestLedger,
    R: ContainerRuntime,
    E: EventSink,
{
    let stream = js.get_stream(subjects::JOBS_STREAM).await?;
    let consumer: consumer::PullConsumer = stream
        .get_or_create_consumer(
            subjects::FACTORY_CONSUMER,
            consumer::pull::Config {
                durable_name: Some(subjects::FACTORY_CONSUMER.to_owned()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: ACK_WAIT,
                max_deliver: -1,
                max_ack_pending: i64::try_from(concurrency * 4).unwrap_or(1024),
                ..Default::default()
            },
        )
        .await?;
    let messages = consumer.messages().await?;
    info!(concurrency, "factory ready");
    messages
        .for_each_concurrent(concurrency, |message| {
            let js = js.clone();
            let factory = Arc::clone(&factory);
            async move {
                match message {
                    Ok(message) => handle_message(&js, &factory, message).await,
                    Err(e) => warn!(error = %e, "failed to receive a job"),
                }
            }
        })
        .await;
    Ok(())
}

async fn handle_message<L, R, E>(
    js: &jetstream::Context,
    factory: &Factory<L, R, E>,
    message: jetstream::Message,
) where
    L: RequestLedger,
    R: ContainerRuntime,
    E: EventSink,
{
    let (job_id, delivered) = match message.info() {
        Ok(info) => (info.stream_sequence, info.delivered),
        Err(e) => {
            warn!(error = %e, "job without JetStream metadata");
            return;
        }
    };
    let Some((job, create)) = decode_job(job_id, &message.payload) else {
        warn!(job_id, "dropping a malformed job");
        ack(&message, AckKind::Term).await;
        return;
    };
    let span = tracing::info_span!(
        "nats_command",
        correlation_id = %job.correlation_id,
        container_id = tracing::field::Empty,
        subject = %message.subject,
        job_id,
        delivered,
    );
    async {
        let decision = with_progress(&message, factory.handle(&job)).await;
        match decision {
            Ok(Decision::Answer(outcome)) => {
                match &outcome {
                    Outcome::Created(id) => {
                        tracing::Span::current().record("container_id", tracing::field::display(id));
                    }
                    Outcome::Failed(e) if e.code == ErrorCode::ExecutionFailed => {
                        warn!(error.code = e.code.as_str(), error.message = %e.message, "request failed");
                    }
                    Outcome::Failed(e) => {
                        info!(error.code = e.code.as_str(), error.message = %e.message, "request refused");
                    }
                }
                match publish_result(js, &job, create, &outcome).await {
                    Ok(()) => ack(&message, AckKind::Ack).await,
                    Err(e) => {
                        error!(error = %e, "failed to publish the result; the job will be retried");
                        ack(&message, AckKind::Nak(Some(LEDGER_RETRY))).await;
                    }
                }
            }
            Ok(Decision::Busy) => {
                debug!("duplicate of a job in progress; retrying later");
                ack(&message, AckKind::Nak(Some(BUSY_RETRY))).await;
            }
            Err(e) => {
                warn!(error = %e, "ledger unavailable; the job will be retried");
                ack(&message, AckKind::Nak(Some(LEDGER_RETRY))).await;
            }
        }
    }
    .instrument(span)
    .await;
}

/// Runs `work` while telling JetStream every few seconds that the job is
/// still alive, so a long pull is not mistaken for a dead factory.
async fn with_progress<T>(
    message: &jetstream::Message,
    work: impl std::future::Future<Output = T>,
) -> T {
    let mut work = std::pin::pin!(work);
    let mut ticker = tokio::time::interval(PROGRESS_EVERY);
    ticker.tick().await;
    loop {
        tokio::select! {
            result = &mut work => return result,
            _ = ticker.tick() => ack(message, AckKind::Progress).await,
        }
    }
}

fn decode_job(job_id: u64, payload: &[u8]) -> Option<(Job, CreateJob)> {
    let create = CreateJob::decode(payload).ok()?;
    let reply = create.reply.as_ref()?;
    let job = Job {
        id: job_id,
        correlation_id: CorrelationId::new(&reply.correlation_id)?,
        operation: Operation::parse(&create.operation)?,
        value: serde_json::from_slice(&create.value_json).ok()?,
        fingerprint: create.fingerprint.clone(),
    };
    Some((job, create))
}

/// Stores the result; its message ID makes a republish after a crash a
/// no-op, so each job is answered once.
async fn publish_result(
    js: &jetstream::Context,
    job: &Job,
    create: CreateJob,
    outcome: &Outcome,
) -> Result<(), async_nats::Error> {
    let result = JobResult {
        reply: create.reply,
        outcome: Some(job_result::Outcome::from(outcome)),
    };
    let publish = PublishMessage::build()
        .payload(result.encode_to_vec().into())
        .message_id(format!("result-{}", job.id));
    js.send_publish(subjects::RESULTS, publish).await?.await?;
    Ok(())
}

async fn ack(message: &jetstream::Message, kind: AckKind) {
    if let Err(e) = message.ack_with(kind).await {
        warn!(error = %e, "failed to acknowledge a job");
    }
}
