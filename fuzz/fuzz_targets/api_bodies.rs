//! Fuzz target `api_bodies`: the body is `custodian::fuzzing::api_bodies` (docs/testing.md#fuzzing).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| custodian::fuzzing::api_bodies(data));
