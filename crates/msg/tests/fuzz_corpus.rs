//! The fuzz targets' corpus (`fuzz/corpus/`), replayed through the same
//! entry points: every input the fuzzer kept, and every crash it found and
//! we fixed, stays a regression test that runs without the fuzzer.
#![cfg(all(
    feature = "memory",
    feature = "redis",
    feature = "nats",
    feature = "amqp",
    feature = "kafka"
))]

use msg::fuzz::replay_corpus;

#[test]
fn core() {
    replay_corpus("cloudevents", msg::fuzz::cloudevents);
    replay_corpus("topics", msg::fuzz::topics);
    replay_corpus("urls", msg::fuzz::urls);
}

#[test]
fn redis() {
    replay_corpus("redis_entry", msg::redis::fuzz::entry);
    replay_corpus("redis_round_trip", msg::redis::fuzz::round_trip);
}

#[test]
fn nats() {
    replay_corpus("nats_headers", msg::nats::fuzz::headers);
    replay_corpus("nats_round_trip", msg::nats::fuzz::round_trip);
}

#[test]
fn amqp() {
    replay_corpus("amqp_delivery", msg::amqp::fuzz::delivery);
    replay_corpus("amqp_round_trip", msg::amqp::fuzz::round_trip);
}

#[test]
fn kafka() {
    replay_corpus("kafka_record", msg::kafka::fuzz::record);
    replay_corpus("kafka_round_trip", msg::kafka::fuzz::round_trip);
}

/// Every target in `fuzz/Cargo.toml` has a corpus replayed above.
#[test]
fn every_target_is_replayed() {
    let manifest = include_str!("../../../fuzz/Cargo.toml");
    let replayed = include_str!("fuzz_corpus.rs");
    for line in manifest.lines() {
        if let Some(name) = line
            .strip_prefix("name = \"")
            .and_then(|l| l.strip_suffix('"'))
        {
            if name == "msg-fuzz" {
                continue;
            }
            assert!(
                replayed.contains(&format!("replay_corpus(\"{name}\"")),
                "the fuzz target {name} has no corpus replay here"
            );
        }
    }
}
