//! Driving adapters of the gateway.

pub mod hono;
