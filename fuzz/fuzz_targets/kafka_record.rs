//! A Kafka record of any key and headers, decoded.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| msg::kafka::fuzz::record(data));
