//! cf-gateway: the device's MQTT edge. It receives Hono commands carrying
//! Ditto messages, answers bad requests at once, queues valid create
//! commands on NATS JetStream for cf-factory, and publishes the factory's
//! results back as Ditto answers.
//!
//! # Layout
//! - [`service`]: what happens to an inbound message; generic over ports.
//! - [`inbound::hono`]: the MQTT connection (rumqttc, MQTT 3.1.1).
//! - [`outbound::nats`]: the job queue and the result stream (JetStream).

pub mod inbound;
pub mod outbound;
pub mod service;
