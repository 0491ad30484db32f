//! A message written as NATS headers and read back.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| msg::nats::fuzz::round_trip(data));
