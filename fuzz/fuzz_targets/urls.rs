//! Every transport's URL parser; passwords never shown.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| msg::fuzz::urls(data));
