//! Domain core of container-factory: what a create request is, how it is
//! validated, how it travels in a Ditto envelope over Hono topics, and the
//! ports that the gateway and factory adapters implement.
//!
//! This crate does no I/O: no runtime, no sockets, no filesystem. Everything
//! here can be tested with plain values.
//!
//! # Layout
//! - [`error`]: the error taxonomy and its Ditto status and error codes.
//! - [`ids`]: validated identifiers (container ID, container name, thing ID).
//! - [`image`]: image references and their normalisation.
//! - [`config`]: the container configuration of `createWithConfig`.
//! - [`ditto`]: Hono topics, the Ditto envelope, and answer rendering.
//! - [`request`]: a parsed, validated create request.
//! - [`ports`]: traits that adapters implement.
#![warn(missing_docs)]

pub mod config;
pub mod ditto;
pub mod error;
pub mod ids;
pub mod image;
pub mod ports;
pub mod request;

pub use error::{ApiError, ErrorCode};
pub use ids::{ContainerId, ContainerName, CorrelationId, ThingId};
