//! A message written as stream fields and read back.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| msg::redis::fuzz::round_trip(data));
