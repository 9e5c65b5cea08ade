//! Fuzz target `tpm_attestation`: the body is `custodian::fuzzing::tpm_attestation` (docs/testing.md#fuzzing).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| custodian::fuzzing::tpm_attestation(data));
