//! Fuzz target `context`: the body is `custodian::fuzzing::context` (docs/testing.md#fuzzing).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| custodian::fuzzing::context(data));
