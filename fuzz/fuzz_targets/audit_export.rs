//! Fuzz target `audit_export`: the body is `custodian::fuzzing::audit_export` (docs/testing.md#fuzzing).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| custodian::fuzzing::audit_export(data));
