//! Fuzz target `vault_request`: the body is `custodian::fuzzing::vault_request` (docs/testing.md#fuzzing).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| custodian::fuzzing::vault_request(data));
