//! The client side of the `custodian` binary: calls the HTTP API with a bearer token taken from
//! `CUSTODIAN_TOKEN` or a file (never from an argument), and token provisioning.

pub mod client;
pub mod provision;
