//! MQTT adapter of the gateway (rumqttc, MQTT 3.1.1, QoS 1): subscribes to
//! the Hono command topic of the thing and publishes answers
//! ([`MqttAnswers`], port `AnswerSink`).
//!
//! The session is persistent (fixed client ID, clean session off) and
//! commands are acknowledged by hand only once they are queued or answered,
//! so a command that arrives while the gateway restarts is not lost.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cf_core::ditto::{command_subscription, Answer};
use cf_core::ports::{AnswerSink, JobQueue, TransportError};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::sync::Semaphore;
use tracing::{info, warn};

use crate::service::Gateway;

/// The largest remaining length MQTT 3.1.1 can encode.
const MQTT_MAX_PACKET: usize = 268_435_455;

/// Commands handled at once; more wait in the broker's queue.
const MAX_IN_FLIGHT: usize = 64;

/// Connection settings of [`HonoMqttSource`].
pub struct MqttSettings {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Stable client ID.
    pub client_id: String,
    /// User name and password, if the broker needs them.
    pub credentials: Option<(String, String)>,
    /// A file created once the command subscription is active.
    pub ready_file: Option<PathBuf>,
}

/// Publishes answers with QoS 1.
#[derive(Clone)]
pub struct MqttAnswers {
    client: AsyncClient,
}

impl AnswerSink for MqttAnswers {
    async fn publish(&self, answer: Answer) -> Result<(), TransportError> {
        self.client
            .publish(answer.topic, QoS::AtLeastOnce, false, answer.payload)
            .await
            .map_err(|e| TransportError(format!("failed to publish on MQTT: {e}")))
    }
}

/// The MQTT connection that feeds commands into the gateway.
pub struct HonoMqttSource {
    client: AsyncClient,
    events: EventLoop,
    ready_file: Option<PathBuf>,
}

impl HonoMqttSource {
    /// Prepares the connection; nothing is sent until [`Self::run`].
    pub fn new(settings: MqttSettings) -> Self {
        let mut options = MqttOptions::new(settings.client_id, settings.host, settings.port);
        options
            .set_keep_alive(Duration::from_secs(20))
            .set_clean_session(false)
            .set_manual_acks(true)
            .set_inflight(256)
            // Accept every packet MQTT allows: an oversized command must get
            // its 413, not break the connection and be redelivered forever.
            .set_max_packet_size(MQTT_MAX_PACKET, 16 * 1024 * 1024);
        if let Some((user, password)) = settings.credentials {
            options.set_credentials(user, password);
        }
        let (client, mut events) = AsyncClient::new(options, 1024);
        let mut network = events.network_options();
        network.set_tcp_nodelay(true);
        network.set_connection_timeout(10);
        events.set_network_options(network);
        Self {
            client,
            events,
            ready_file: settings.ready_file,
        }
    }

    /// The answer publisher sharing this connection.
    pub fn answers(&self) -> MqttAnswers {
        MqttAnswers {
            client: self.client.clone(),
        }
    }

    /// Runs the connection forever, reconnecting with back-off.
    pub async fn run<Q: JobQueue, A: AnswerSink>(mut self, gateway: Arc<Gateway<Q, A>>) {
        let subscription = command_subscription(gateway.thing());
        let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    info!(
                        session_present = ack.session_present,
                        "connected to MQTT broker"
                    );
                    backoff = Duration::from_millis(200);
                    // Subscribing again is harmless with a kept session and
                    // needed when the broker lost it.
                    if let Err(e) = self.client.subscribe(&subscription, QoS::AtLeastOnce).await {
                        warn!(error = %e, "failed to request the command subscription");
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    info!(topic = %subscription, "command subscription active");
                    self.mark_ready();
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
                        return;
                    };
                    let gateway = Arc::clone(&gateway);
                    let client = self.client.clone();
                    tokio::spawn(async move {
                        gateway
                            .handle_message(&publish.topic, &publish.payload)
                            .await;
                        if let Err(e) = client.ack(&publish).await {
                            warn!(error = %e, "failed to acknowledge a command");
                        }
                        drop(permit);
                    });
                }
                Ok(_) => {}
                Err(e) => {
                    warn!(error = %e, retry_in = ?backoff, "MQTT connection failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    fn mark_ready(&self) {
        let Some(path) = &self.ready_file else { return };
        if let Err(e) = std::fs::write(path, b"subscribed\n") {
            warn!(path = %path.display(), error = %e, "failed to write the ready file");
        }
    }
}
