//! Interoperability tests of msg against other languages' clients; the
//! tests are in `tests/`, run by `cargo xtask test` (step `interop`), which
//! installs the Python side into the tool cache and starts the brokers.
#![forbid(unsafe_code)]
