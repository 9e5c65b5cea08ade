//! Secrets over HTTP.
