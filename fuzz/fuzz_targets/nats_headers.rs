//! A NATS message of any headers, decoded.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| msg::nats::fuzz::headers(data));
