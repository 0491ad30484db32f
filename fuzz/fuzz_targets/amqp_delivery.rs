//! An AMQP delivery of any properties and header values, decoded.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| msg::amqp::fuzz::delivery(data));
