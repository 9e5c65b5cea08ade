//! Fuzz target `blob`: the body is `custodian::fuzzing::blob` (docs/testing.md#fuzzing).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| custodian::fuzzing::blob(data));
