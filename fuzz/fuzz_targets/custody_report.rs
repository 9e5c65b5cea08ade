//! Fuzz target `custody_report`: the body is `custodian::fuzzing::custody_report` (docs/testing.md#fuzzing).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| custodian::fuzzing::custody_report(data));
