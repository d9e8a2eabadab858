//! Driving adapters of the factory.

pub mod jobs;
