//! The client side of the `custodian` binary: calls the HTTP API with a bearer token taken from
//! `CUSTODIAN_TOKEN` or a file (never from an argument), token provisioning, and the audit and
//! custody commands, whose verification runs offline (including the TPM attestations of a
//! custody report).

pub mod attest;
pub mod audit;
pub mod client;
pub mod provision;
