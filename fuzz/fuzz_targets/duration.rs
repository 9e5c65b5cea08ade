//! Fuzz target `duration`: the body is `custodian::fuzzing::duration` (docs/testing.md#fuzzing).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| custodian::fuzzing::duration(data));
