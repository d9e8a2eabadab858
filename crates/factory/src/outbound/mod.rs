//! Driven adapters of the factory.

pub mod cni;
pub mod containerd;
pub mod ctrd;
pub mod events;
pub mod image;
pub mod ledger;
pub mod spec;
