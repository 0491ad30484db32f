//! A stream entry of any fields, decoded.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| msg::redis::fuzz::entry(data));
