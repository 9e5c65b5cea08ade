//! Integration tests: one binary. Black-box tests start the real `custodian` binary on a fresh
//! SoftHSM2 token directory each and drive it over HTTP; in-process tests (attribute read-back,
//! format vectors) use the token directory that `SOFTHSM2_CONF` names for this test process.

// Test code may unwrap and panic: a failure is a failed test, with the value in the message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

mod alerts;
mod api_contract;
mod api_errors;
mod api_roundtrip;
mod audit;
mod authz;
mod aws;
mod background;
mod cli;
mod cli_lifecycle;
mod cli_policy;
mod cli_progress;
mod cli_secrets;
mod cli_tpm;
mod clock;
mod conformance;
mod custody;
mod dbcreds;
mod device;
mod faults;
mod files;
mod hardening;
mod hygiene;
mod layers;
mod lifecycle;
mod metrics;
mod nodes;
mod openapi;
mod policy;
mod restart;
mod rewrap;
mod seal;
mod secrets;
mod startup;
mod store_conformance;
mod store_migrate;
mod store_outage;
mod store_postgres;
mod throttle;
mod tls;
mod tpm_device;
mod transport;
mod ui;
mod vault;
mod vault_openbao;
mod vectors;
