//! Fuzz target `sigv4`: the body is `custodian::fuzzing::sigv4` (docs/testing.md#fuzzing).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| custodian::fuzzing::sigv4(data));
