//! Fuzz target `aws_request`: the body is `custodian::fuzzing::aws_request` (docs/testing.md#fuzzing).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| custodian::fuzzing::aws_request(data));
