//! Driven adapters of the gateway.

pub mod nats;
