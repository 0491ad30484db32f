//! Headers and a payload read as a CloudEvent, and written back in every binding.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| msg::fuzz::cloudevents(data));
