//! The `custodian secrets` CLI, end to end (written with the CLI).
