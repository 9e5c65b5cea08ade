//! Fuzz target `stream`: the body is `custodian::fuzzing::stream` (docs/testing.md#fuzzing).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| custodian::fuzzing::stream(data));
