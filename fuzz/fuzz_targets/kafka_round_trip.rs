//! A message written as a Kafka record and read back.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| msg::kafka::fuzz::round_trip(data));
