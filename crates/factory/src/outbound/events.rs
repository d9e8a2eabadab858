//! [`NatsEvents`]: the `EventSink` port on core NATS. Each state change is
//! a `ContainerEvent` protobuf on `cf.events.<container id>`; events are
//! notifications, so they are published without JetStream persistence.

use cf_bus::pb;
use cf_bus::subjects;
use cf_core::ports::{ContainerEvent, EventSink};
use prost::Message;
use tracing::{debug, warn};

/// Publishes container events on NATS.
#[derive(Clone)]
pub struct NatsEvents {
    client: async_nats::Client,
}

impl NatsEvents {
    /// Events published through `client`.
    pub fn new(client: async_nats::Client) -> Self {
        Self { client }
    }
}

impl EventSink for NatsEvents {
    async fn publish(&self, event: ContainerEvent) {
        let id = event.container_id.to_string();
        let message = pb::ContainerEvent {
            container_id: id.clone(),
            state: event.state.as_str().to_owned(),
            exit_code: event
                .exit_code
                .and_then(|c| i32::try_from(c).ok())
                .unwrap_or_default(),
            error: event.error.unwrap_or_default(),
            correlation_id: event
                .correlation_id
                .map(|c| c.to_string())
                .unwrap_or_default(),
        };
        let subject = subjects::container_events(&id);
        match self
            .client
            .publish(subject, message.encode_to_vec().into())
            .await
        {
            Ok(()) => debug!(container_id = %id, state = event.state.as_str(), "event published"),
            Err(e) => warn!(container_id = %id, error = %e, "failed to publish a container event"),
        }
    }
}
