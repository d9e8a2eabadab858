//! cf-factory: consumes create jobs from the NATS JetStream bus and carries
//! them out on containerd: pull and unpack the image, create the container,
//! connect it to the CNI bridge network, start its task, and publish the
//! result. Each correlation-id is worked on once, even across crashes.
//!
//! # Layout
//! - [`service`]: the once-per-request logic, generic over the ports.
//! - [`inbound::jobs`]: the JetStream job consumer.
//! - [`outbound::containerd`]: the `ContainerRuntime` on containerd 1.6,
//!   with [`outbound::image`] (pull and unpack), [`outbound::spec`] (OCI
//!   runtime spec) and [`outbound::cni`] (bridge network).
//! - [`outbound::ledger`]: the `RequestLedger` on a JetStream KV bucket.

pub mod inbound;
pub mod outbound;
pub mod service;
