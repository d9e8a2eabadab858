//! Black-box end-to-end suite of container-factory.
//!
//! Runs against the real local stack that `just up` starts (mosquitto, NATS,
//! containerd, a registry, cf-factory, cf-gateway) and reads its coordinates
//! from `.run/env`. Every test talks MQTT like a Kanto client, checks every
//! answer against the vendored Ditto schemas, and inspects containerd with
//! `ctr`. Without a running stack every test fails, telling to run `just up`.
//!
//! Layout:
//! - `helpers`: environment, MQTT client, schema checks, `ctr`, services;
//! - `seed`: the API page's two examples verbatim, published ports, extraHosts;
//! - `create`: `start: false`, env and cmd, direct registry references;
//! - `errors`: every error class, empty request IDs, `response-required`;
//! - `idempotency`: correlation-id replays;
//! - `failures`: a pull failure leaves nothing behind;
//! - `concurrency`: a burst of creates;
//! - `events`: container lifecycle events on the internal NATS bus;
//! - `resilience`: killing cf-factory and restarting cf-gateway mid-request.

mod concurrency;
mod create;
mod errors;
mod events;
mod failures;
mod helpers;
mod idempotency;
mod resilience;
mod seed;
