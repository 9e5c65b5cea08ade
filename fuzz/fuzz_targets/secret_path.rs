//! Fuzz target `secret_path`: the body is `custodian::fuzzing::secret_path` (docs/testing.md#fuzzing).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| custodian::fuzzing::secret_path(data));
