//! Topic and pattern validation and matching.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| msg::fuzz::topics(data));
