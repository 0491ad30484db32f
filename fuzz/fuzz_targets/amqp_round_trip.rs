//! A message written as AMQP properties and read back.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| msg::amqp::fuzz::round_trip(data));
