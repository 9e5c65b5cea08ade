//! Fuzz target `policy`: the body is `custodian::fuzzing::policy` (docs/testing.md#fuzzing).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| custodian::fuzzing::policy(data));
