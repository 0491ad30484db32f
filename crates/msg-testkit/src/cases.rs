//! The conformance cases. Each takes the [`Harness`] and panics on failure.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::join_all;
use msg_core::{
    Bytes, Error, Message, MessageOrder, Position, PublishOptions, Publisher, Received, Router,
    StartPosition, Subscriber, Subscription, Uuid, dead_letter_topic, headers,
};
use tokio::time::Instant;

pub use crate::dead_letter::*;
use crate::harness::{Harness, collect, recv};
pub use crate::request::*;

/// A subscription as the cases use it: from the earliest position, so that
/// nothing published right after subscribing can be missed.
fn sub(topic: &str) -> Subscription {
    Subscription::new(topic).start(StartPosition::Earliest)
}

fn numbered(i: usize) -> Message {
    Message::new(format!("message {i}")).with_header("seq", i.to_string())
}

fn seq_of(m: &Message) -> usize {
    m.header("seq")
        .and_then(|s| s.parse().ok())
        .expect("seq header")
}

async fn publish_all(c: &impl Publisher, topic: &str, messages: &[Message]) {
    for m in messages {
        c.publish(topic, m.clone()).await.expect("publish");
    }
}

fn ids(messages: &[Message]) -> HashSet<Uuid> {
    messages.iter().map(Message::id).collect()
}

/// Payload, headers, id and key arrive as they were sent.
pub async fn publish_subscribe_roundtrip(h: &Harness) {
    let topic = h.topic("roundtrip");
    let c = h.connect().await;
    let mut stream = c.subscribe(sub(&topic)).await.expect("subscribe");
    let sent: Vec<Message> = (0..20)
        .map(|i| {
            numbered(i)
                .with_key(format!("k{}", i % 3))
                .with_header("x-app", "test")
        })
        .collect();
    publish_all(&c, &topic, &sent).await;
    let got = collect(&mut stream, sent.len(), h.timeout()).await;
    let by_id: HashMap<Uuid, &Message> = sent.iter().map(|m| (m.id(), m)).collect();
    for d in &got {
        let m = d.message();
        let original = by_id.get(&m.id()).expect("an id that was sent");
        assert_eq!(m.payload(), original.payload());
        assert_eq!(m.key(), original.key());
        assert_eq!(m.header("x-app"), Some("test"));
        assert_eq!(m.header("seq"), original.header("seq"));
        assert_eq!(&*d.metadata().topic, topic.as_str());
        assert_eq!(d.metadata().attempt, 1);
        assert!(!d.metadata().redelivered);
    }
}

/// A key, unicode header values, an empty payload and a 1 MiB payload.
pub async fn edge_payloads_roundtrip(h: &Harness) {
    let topic = h.topic("edges");
    let c = h.connect().await;
    let mut stream = c.subscribe(sub(&topic)).await.expect("subscribe");
    let big_ok = h
        .capabilities()
        .max_message_size
        .is_none_or(|max| max >= 1 << 20);
    let mut sent = vec![
        Message::new(Bytes::new()).with_key("empty"),
        Message::new("ünïcödé ✓").with_header("greeting", "grüß dich ✓ 你好 \t tab"),
    ];
    if big_ok {
        let big: Vec<u8> = (0..(1usize << 20)).map(|i| (i % 251) as u8).collect();
        sent.push(Message::new(big).with_key("big"));
    } else {
        h.skip(
            "edge_payloads_roundtrip (1 MiB part)",
            "the transport's max message size is below 1 MiB",
        );
    }
    publish_all(&c, &topic, &sent).await;
    let got = collect(&mut stream, sent.len(), h.timeout()).await;
    for original in &sent {
        let d = got
            .iter()
            .find(|d| d.message().id() == original.id())
            .expect("received");
        assert_eq!(d.message().payload(), original.payload());
        assert_eq!(d.message().key(), original.key());
        for (name, value) in original.headers().iter() {
            assert_eq!(d.message().header(name), Some(value), "header {name}");
        }
    }
}

/// Bad topics and headers are clear errors; settling twice is an error.
pub async fn invalid_input_is_rejected(h: &Harness) {
    let c = h.connect().await;
    for bad in ["", "has space", "a..b", "wild.*"] {
        match c.publish(bad, Message::new("x")).await {
            Err(Error::InvalidTopic { .. }) => {}
            other => panic!("publish to {bad:?}: expected InvalidTopic, got {other:?}"),
        }
    }
    let topic = h.topic("invalid");
    match c
        .publish(&topic, Message::new("x").with_header("bad name", "v"))
        .await
    {
        Err(Error::InvalidHeader { .. }) => {}
        other => panic!("expected InvalidHeader, got {other:?}"),
    }
    assert!(c.subscribe(Subscription::new("a b")).await.is_err());
    let mut stream = c.subscribe(sub(&topic)).await.expect("subscribe");
    c.publish(&topic, Message::new("ok"))
        .await
        .expect("publish");
    let mut d = recv(&mut stream, h.timeout()).await.expect("delivery");
    d.ack().await.expect("first ack");
    assert!(matches!(d.ack().await, Err(Error::AlreadySettled)));
    assert!(matches!(d.retry().await, Err(Error::AlreadySettled)));
}

/// Several publishers and several subscribers at once lose nothing.
pub async fn concurrent_publish_subscribe(h: &Harness) {
    let topic = h.topic("concurrent");
    let (publishers, per_publisher) = (4, 50);
    let subscribers = if h.capabilities().consumer_groups {
        3
    } else {
        1
    };
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let total = publishers * per_publisher;
    let mut consumers = Vec::new();
    let mut streams = Vec::new();
    for _ in 0..subscribers {
        let c = h.connect().await;
        let s = sub(&topic);
        let s = if subscribers > 1 {
            s.group(h.group("workers"))
        } else {
            s
        };
        streams.push(c.subscribe(s).await.expect("subscribe"));
        consumers.push(c);
    }
    let tasks: Vec<_> = streams
        .into_iter()
        .map(|mut stream| {
            let seen = seen.clone();
            let (timeout, quiet) = (h.timeout(), h.quiet());
            tokio::spawn(async move {
                let mut deadline = Instant::now() + timeout;
                while seen.lock().unwrap().len() < total && Instant::now() < deadline {
                    // Short waits, so that a member whose peers took the rest stops soon.
                    let Some(mut d) = recv(&mut stream, quiet).await else {
                        continue;
                    };
                    deadline = Instant::now() + timeout;
                    d.ack().await.expect("ack");
                    seen.lock().unwrap().insert(d.message().id());
                }
            })
        })
        .collect();
    let mut sent = HashSet::new();
    let mut publishing = Vec::new();
    for p in 0..publishers {
        let c = h.connect().await;
        let topic = topic.clone();
        let messages: Vec<Message> = (0..per_publisher).map(|i| numbered(p * 1000 + i)).collect();
        sent.extend(ids(&messages));
        publishing.push(tokio::spawn(async move {
            publish_all(&c, &topic, &messages).await
        }));
    }
    for r in join_all(publishing).await {
        r.expect("publisher task");
    }
    for r in join_all(tasks).await {
        r.expect("subscriber task");
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), total, "received {} of {total}", seen.len());
    assert!(seen.is_subset(&sent) && sent.is_subset(&seen));
}

/// Many topics at once, each with its own messages.
pub async fn many_topics(h: &Harness) {
    let c = h.connect().await;
    let topics: Vec<String> = (0..10).map(|_| h.topic("many-topics")).collect();
    let mut streams = Vec::new();
    for t in &topics {
        streams.push(c.subscribe(sub(t)).await.expect("subscribe"));
    }
    let mut sent = Vec::new();
    for t in &topics {
        let messages: Vec<Message> = (0..5).map(numbered).collect();
        publish_all(&c, t, &messages).await;
        sent.push(ids(&messages));
    }
    for ((stream, expected), t) in streams.iter_mut().zip(&sent).zip(&topics) {
        let got = collect(stream, expected.len(), h.timeout()).await;
        let got_ids: HashSet<Uuid> = got.iter().map(|d| d.message().id()).collect();
        assert_eq!(&got_ids, expected, "topic {t}");
        assert!(got.iter().all(|d| &*d.metadata().topic == t.as_str()));
    }
}

/// A subscriber of one topic receives nothing of another.
pub async fn topic_isolation(h: &Harness) {
    let (a, b) = (h.topic("isolation-a"), h.topic("isolation-b"));
    let c = h.connect().await;
    let mut stream_a = c.subscribe(sub(&a)).await.expect("subscribe");
    c.publish(&b, Message::new("for b")).await.expect("publish");
    let for_a = Message::new("for a");
    c.publish(&a, for_a.clone()).await.expect("publish");
    let got = collect(&mut stream_a, 1, h.timeout()).await;
    assert_eq!(got[0].message().id(), for_a.id());
    assert!(
        recv(&mut stream_a, h.quiet()).await.is_none(),
        "a message of another topic arrived"
    );
}

/// Every broadcast subscriber receives every message.
pub async fn broadcast_reaches_every_subscriber(h: &Harness) {
    let topic = h.topic("broadcast");
    let c = h.connect().await;
    let mut one = c.subscribe(sub(&topic)).await.expect("subscribe");
    let mut two = h
        .connect()
        .await
        .subscribe(sub(&topic))
        .await
        .expect("subscribe");
    let sent: Vec<Message> = (0..10).map(numbered).collect();
    publish_all(&c, &topic, &sent).await;
    for (name, stream) in [("first", &mut one), ("second", &mut two)] {
        let mut got = HashSet::new();
        while got.len() < sent.len() {
            let Some(mut d) = recv(stream, h.timeout()).await else {
                panic!(
                    "the {name} subscriber received {} of {} messages",
                    got.len(),
                    sent.len()
                );
            };
            d.ack().await.expect("ack");
            got.insert(d.message().id());
        }
        assert_eq!(got, ids(&sent));
    }
}

/// Two groups each get everything; the members of one group share it.
pub async fn consumer_groups(h: &Harness) {
    if !h.capabilities().consumer_groups {
        return h.skip("consumer_groups", "the transport has no consumer groups");
    }
    let topic = h.topic("groups");
    let sent: Vec<Message> = (0..40).map(numbered).collect();
    let mut members = Vec::new();
    for group in ["group-a", "group-b"] {
        for _ in 0..2 {
            let c = h.connect().await;
            let s = sub(&topic).group(h.group(group)).prefetch(1);
            members.push((group, c.subscribe(s).await.expect("subscribe"), c));
        }
    }
    let c = h.connect().await;
    publish_all(&c, &topic, &sent).await;
    let received: Arc<Mutex<HashMap<&str, HashSet<Uuid>>>> = Default::default();
    let per_member: Vec<_> = members
        .into_iter()
        .map(|(group, mut stream, c)| {
            let received = received.clone();
            let (timeout, quiet, n) = (h.timeout(), h.quiet(), sent.len());
            tokio::spawn(async move {
                let _c = c;
                let mut mine = 0usize;
                let mut deadline = Instant::now() + timeout;
                loop {
                    let done = received
                        .lock()
                        .unwrap()
                        .get(group)
                        .is_some_and(|s| s.len() >= n);
                    let Some(mut d) = recv(&mut stream, quiet).await else {
                        if done || Instant::now() > deadline {
                            break;
                        }
                        continue;
                    };
                    deadline = Instant::now() + timeout;
                    // Slow enough that the other member gets its share.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    d.ack().await.expect("ack");
                    received
                        .lock()
                        .unwrap()
                        .entry(group)
                        .or_default()
                        .insert(d.message().id());
                    mine += 1;
                }
                (group, mine)
            })
        })
        .collect();
    let counts: Vec<(&str, usize)> = join_all(per_member)
        .await
        .into_iter()
        .map(|r| r.expect("member"))
        .collect();
    let received = received.lock().unwrap();
    for group in ["group-a", "group-b"] {
        assert_eq!(
            received.get(group),
            Some(&ids(&sent)),
            "{group} did not receive every message"
        );
        let shares: Vec<usize> = counts
            .iter()
            .filter(|(g, _)| *g == group)
            .map(|(_, n)| *n)
            .collect();
        assert!(
            shares.iter().all(|n| *n > 0),
            "{group}: a member got nothing: {shares:?}"
        );
    }
}

fn needs_at_least_once(h: &Harness, case: &str) -> bool {
    if !h.capabilities().at_least_once {
        h.skip(case, "the transport delivers at most once");
    }
    h.capabilities().at_least_once
}

/// A retried message comes again.
pub async fn retry_delivers_again(h: &Harness) {
    if !needs_at_least_once(h, "retry_delivers_again") {
        return;
    }
    let topic = h.topic("nack");
    let c = h.connect().await;
    let mut stream = c.subscribe(sub(&topic)).await.expect("subscribe");
    let m = Message::new("again");
    c.publish(&topic, m.clone()).await.expect("publish");
    let mut first = recv(&mut stream, h.timeout())
        .await
        .expect("first delivery");
    assert_eq!(first.message().id(), m.id());
    first.retry().await.expect("nack");
    let mut second = recv(&mut stream, h.timeout())
        .await
        .expect("redelivery after nack");
    assert_eq!(second.message().id(), m.id());
    assert_eq!(second.message().payload(), m.payload());
    second.ack().await.expect("ack");
}

/// The delivery attempt counts up with each redelivery.
pub async fn delivery_attempt_increments(h: &Harness) {
    if !needs_at_least_once(h, "delivery_attempt_increments") {
        return;
    }
    let topic = h.topic("attempts");
    let c = h.connect().await;
    let mut stream = c.subscribe(sub(&topic)).await.expect("subscribe");
    c.publish(&topic, Message::new("x")).await.expect("publish");
    for expected in 1..=3u32 {
        let mut d = recv(&mut stream, h.timeout()).await.expect("delivery");
        assert_eq!(d.metadata().attempt, expected);
        assert_eq!(d.metadata().redelivered, expected > 1);
        if expected < 3 {
            d.retry().await.expect("nack");
        } else {
            d.ack().await.expect("ack");
        }
    }
}

/// Failures of some messages do not stop the others; all get through.
pub async fn continue_after_errors(h: &Harness) {
    if !needs_at_least_once(h, "continue_after_errors") {
        return;
    }
    let topic = h.topic("errors");
    let c = h.connect().await;
    let mut stream = c.subscribe(sub(&topic)).await.expect("subscribe");
    let sent: Vec<Message> = (0..20).map(numbered).collect();
    publish_all(&c, &topic, &sent).await;
    let mut acked = HashSet::new();
    while acked.len() < sent.len() {
        let mut d = recv(&mut stream, h.timeout())
            .await
            .unwrap_or_else(|| panic!("stalled after {} of {} acks", acked.len(), sent.len()));
        // Every other message fails on its first two attempts.
        if seq_of(d.message()).is_multiple_of(2) && d.metadata().attempt < 3 {
            d.retry().await.expect("nack");
        } else {
            d.ack().await.expect("ack");
            acked.insert(d.message().id());
        }
    }
    assert_eq!(acked, ids(&sent));
}

/// A message retried after a delay comes again, but not before it.
pub async fn retry_after_not_before_delay(h: &Harness) {
    if !needs_at_least_once(h, "retry_after_not_before_delay") {
        return;
    }
    let topic = h.topic("defer");
    let c = h.connect().await;
    let mut stream = c.subscribe(sub(&topic)).await.expect("subscribe");
    c.publish(&topic, Message::new("later"))
        .await
        .expect("publish");
    let mut d = recv(&mut stream, h.timeout()).await.expect("delivery");
    let delay = Duration::from_millis(700);
    let deferred_at = Instant::now();
    d.retry_after(delay).await.expect("defer");
    let mut again = recv(&mut stream, h.timeout() + delay)
        .await
        .expect("redelivery after defer");
    let waited = deferred_at.elapsed();
    assert!(
        waited >= delay,
        "redelivered after {waited:?}, before the {delay:?} delay"
    );
    assert_eq!(again.message().id(), d.message().id());
    assert_eq!(again.metadata().attempt, 2);
    again.ack().await.expect("ack");
}

/// A dead-lettered message goes to the dead-letter topic with the reason, and
/// never comes again on its own topic.
pub async fn dead_letter_with_reserved_headers(h: &Harness) {
    if !needs_at_least_once(h, "dead_letter_with_reserved_headers") {
        return;
    }
    let topic = h.topic("reject");
    let dlq = dead_letter_topic(&topic);
    let c = h.connect().await;
    let mut stream = c.subscribe(sub(&topic)).await.expect("subscribe");
    let mut dead = c
        .subscribe(sub(&dlq))
        .await
        .expect("subscribe to the dead-letter topic");
    let m = Message::new("poison").with_header("x-app", "test");
    c.publish(&topic, m.clone()).await.expect("publish");
    let mut d = recv(&mut stream, h.timeout()).await.expect("delivery");
    d.dead_letter("payload is poison").await.expect("reject");
    expect_dead_letter(h, &mut dead, &m, &topic, "payload is poison", 1).await;
    assert!(
        recv(&mut stream, h.quiet()).await.is_none(),
        "a rejected message was redelivered"
    );
}

/// With prefetch 1, the next message waits until the current one is settled.
pub async fn no_next_while_unacked(h: &Harness) {
    if !needs_at_least_once(h, "no_next_while_unacked") {
        return;
    }
    if h.capabilities().ordering == MessageOrder::None {
        return h.skip("no_next_while_unacked", "the transport guarantees no order");
    }
    let topic = h.topic("no-next");
    let c = h.connect().await;
    let mut stream = c
        .subscribe(sub(&topic).prefetch(1))
        .await
        .expect("subscribe");
    // One key: transports that order per key promise nothing across keys.
    let sent: Vec<Message> = (0..2).map(|i| numbered(i).with_key("one")).collect();
    publish_all(&c, &topic, &sent).await;
    let mut first = recv(&mut stream, h.timeout()).await.expect("first");
    assert_eq!(first.message().id(), sent[0].id());
    assert!(
        recv(&mut stream, h.quiet()).await.is_none(),
        "a second message came while the first was unacked"
    );
    first.ack().await.expect("ack");
    let second = collect(&mut stream, 1, h.timeout()).await;
    assert_eq!(second[0].message().id(), sent[1].id());
}

/// A subscriber holds at most its prefetch of unsettled deliveries, however
/// many wait; settling one lets the next come, and nothing is lost.
pub async fn prefetch_bounds_what_is_held(h: &Harness) {
    if !needs_at_least_once(h, "prefetch_bounds_what_is_held") {
        return;
    }
    let topic = h.topic("prefetch");
    let c = h.connect().await;
    let mut stream = c
        .subscribe(sub(&topic).prefetch(4))
        .await
        .expect("subscribe");
    let sent: Vec<Message> = (0..12).map(numbered).collect();
    publish_all(&c, &topic, &sent).await;
    let mut held = Vec::new();
    while held.len() < 4 {
        let d = recv(&mut stream, h.timeout()).await;
        held.push(d.expect("the prefetch's worth of deliveries"));
    }
    assert!(
        recv(&mut stream, h.quiet()).await.is_none(),
        "a fifth delivery came while the prefetch of four was held"
    );
    let mut got: HashSet<Uuid> = held.iter().map(|d| d.message().id()).collect();
    held.pop().expect("held").ack().await.expect("ack");
    let fifth = recv(&mut stream, h.timeout()).await;
    held.push(fifth.expect("a delivery once one of the four was settled"));
    for mut d in held {
        d.ack().await.expect("ack");
        got.insert(d.message().id());
    }
    while got.len() < sent.len() {
        let Some(mut d) = recv(&mut stream, h.timeout()).await else {
            panic!("{} of {} messages arrived", got.len(), sent.len());
        };
        d.ack().await.expect("ack");
        got.insert(d.message().id());
    }
    assert_eq!(got, ids(&sent));
}

/// Order is kept: per key, or for the whole topic, as the transport says.
pub async fn order_kept(h: &Harness) {
    let ordering = h.capabilities().ordering;
    if ordering == MessageOrder::None {
        return h.skip("order_kept", "the transport guarantees no order");
    }
    let topic = h.topic("order");
    let c = h.connect().await;
    let mut stream = c.subscribe(sub(&topic)).await.expect("subscribe");
    let sent: Vec<Message> = (0..60)
        .map(|i| numbered(i).with_key(format!("key-{}", i % 3)))
        .collect();
    publish_all(&c, &topic, &sent).await;
    let got = collect(&mut stream, sent.len(), h.timeout()).await;
    let seqs: Vec<(String, usize)> = got
        .iter()
        .map(|d| {
            (
                d.message().key().unwrap_or_default().to_owned(),
                seq_of(d.message()),
            )
        })
        .collect();
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (key, seq) in &seqs {
        if let Some(prev) = last.insert(key, *seq) {
            assert!(prev < *seq, "key {key}: {seq} arrived after {prev}");
        }
    }
    if ordering == MessageOrder::PerTopic {
        let all: Vec<usize> = seqs.iter().map(|(_, s)| *s).collect();
        assert!(
            all.windows(2).all(|w| w[0] < w[1]),
            "topic order broken: {all:?}"
        );
    }
}

/// A group member that leaves with messages unacked loses none of them: the
/// next member of the group receives them.
pub async fn continue_after_subscriber_close(h: &Harness) {
    if !needs_at_least_once(h, "continue_after_subscriber_close") {
        return;
    }
    if !h.capabilities().consumer_groups {
        return h.skip(
            "continue_after_subscriber_close",
            "the transport has no consumer groups",
        );
    }
    let topic = h.topic("resume");
    let group = h.group("resume");
    let sent: Vec<Message> = (0..30).map(numbered).collect();
    let mut acked = HashSet::new();
    {
        let c = h.connect().await;
        let mut stream = c
            .subscribe(sub(&topic).group(&group))
            .await
            .expect("subscribe");
        publish_all(&c, &topic, &sent).await;
        for d in collect(&mut stream, 10, h.timeout()).await {
            acked.insert(d.message().id());
        }
        // Take a few more and leave without settling them.
        for _ in 0..3 {
            let d = recv(&mut stream, h.timeout()).await.expect("delivery");
            drop(d);
        }
        Subscriber::close(&c).await.expect("close");
    }
    let c = h.connect().await;
    let mut stream = c
        .subscribe(sub(&topic).group(&group))
        .await
        .expect("subscribe again");
    let missing: HashSet<Uuid> = ids(&sent).difference(&acked).copied().collect();
    let mut got = HashSet::new();
    while !missing.is_subset(&got) {
        let Some(mut d) = recv(&mut stream, h.timeout()).await else {
            panic!(
                "{} of {} unacked messages never came back",
                missing.difference(&got).count(),
                missing.len()
            );
        };
        d.ack().await.expect("ack");
        got.insert(d.message().id());
    }
}

/// Many subscribers closing at once neither hang nor panic.
pub async fn concurrent_close(h: &Harness) {
    let topic = h.topic("close");
    let c = h.connect().await;
    let mut closing = Vec::new();
    for i in 0..10u32 {
        let conn = h.connect().await;
        let mut stream = conn.subscribe(sub(&topic)).await.expect("subscribe");
        closing.push(tokio::spawn(async move {
            if i.is_multiple_of(2) {
                Subscriber::close(&conn).await.expect("close");
                while futures::StreamExt::next(&mut stream).await.is_some() {}
            } else {
                drop(stream);
            }
        }));
    }
    c.publish(&topic, Message::new("during close"))
        .await
        .expect("publish");
    let all = tokio::time::timeout(h.timeout(), join_all(closing))
        .await
        .expect("closing hung");
    for r in all {
        r.expect("close task");
    }
}

/// Closing the subscriber ends its streams; it then refuses to subscribe.
pub async fn subscriber_close_ends_stream(h: &Harness) {
    let topic = h.topic("close-ends");
    let c = h.connect().await;
    let mut stream = c.subscribe(sub(&topic)).await.expect("subscribe");
    Subscriber::close(&c).await.expect("close");
    let end = tokio::time::timeout(h.timeout(), async {
        while let Some(item) = futures::StreamExt::next(&mut stream).await {
            drop(item);
        }
    });
    end.await.expect("the stream did not end after close");
    assert!(
        c.subscribe(sub(&topic)).await.is_err(),
        "subscribe after close succeeded"
    );
}

/// Everything published before the publisher closes arrives; publishing
/// after close is `Error::Closed`.
pub async fn publisher_close_loses_nothing(h: &Harness) {
    let topic = h.topic("publisher-close");
    let consumer = h.connect().await;
    let mut stream = consumer.subscribe(sub(&topic)).await.expect("subscribe");
    let producer = h.connect().await;
    let sent: Vec<Message> = (0..50).map(numbered).collect();
    producer
        .publish_batch(&topic, sent.clone())
        .await
        .expect("publish batch");
    Publisher::close(&producer).await.expect("close");
    assert!(matches!(
        producer.publish(&topic, Message::new("late")).await,
        Err(Error::Closed)
    ));
    let got = collect(&mut stream, sent.len(), h.timeout()).await;
    assert_eq!(
        got.iter().map(|d| d.message().id()).collect::<HashSet<_>>(),
        ids(&sent)
    );
}

/// A subscriber that starts at the earliest position receives what was
/// published before it subscribed.
pub async fn new_subscriber_receives_old_messages(h: &Harness) {
    if !h.capabilities().replay {
        return h.skip(
            "new_subscriber_receives_old_messages",
            "the transport does not replay",
        );
    }
    let topic = h.topic("replay");
    let c = h.connect().await;
    let sent: Vec<Message> = (0..10).map(numbered).collect();
    publish_all(&c, &topic, &sent).await;
    let mut stream = h
        .connect()
        .await
        .subscribe(sub(&topic))
        .await
        .expect("subscribe");
    let got = collect(&mut stream, sent.len(), h.timeout()).await;
    assert_eq!(
        got.iter().map(|d| d.message().id()).collect::<HashSet<_>>(),
        ids(&sent)
    );
}

/// A router shut down in the middle of work loses nothing: what it had not
/// finished comes to the next router of the group.
pub async fn graceful_shutdown_loses_nothing(h: &Harness) {
    if !needs_at_least_once(h, "graceful_shutdown_loses_nothing") {
        return;
    }
    if !h.capabilities().consumer_groups {
        return h.skip(
            "graceful_shutdown_loses_nothing",
            "the transport has no consumer groups",
        );
    }
    let topic = h.topic("shutdown");
    let group = h.group("shutdown");
    let sent: Vec<Message> = (0..60).map(numbered).collect();
    let done: Arc<Mutex<HashSet<Uuid>>> = Default::default();
    let handler = {
        let done = done.clone();
        move |r: Received| {
            let done = done.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                done.lock().unwrap().insert(r.message.id());
                Ok(())
            }
        }
    };
    let c = h.connect().await;
    let first = Router::new(c.clone(), c.clone())
        .handle(sub(&topic).group(&group), handler.clone())
        .shutdown_timeout(Duration::from_secs(5))
        .start()
        .await
        .expect("start router");
    publish_all(&c, &topic, &sent).await;
    let deadline = Instant::now() + h.timeout();
    while done.lock().unwrap().len() < 10 {
        assert!(Instant::now() < deadline, "the router handled too little");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.shutdown().await;
    let c2 = h.connect().await;
    let second = Router::new(c2.clone(), c2.clone())
        .handle(sub(&topic).group(&group), handler)
        .start()
        .await
        .expect("start second router");
    let deadline = Instant::now() + h.timeout();
    while done.lock().unwrap().len() < sent.len() {
        assert!(
            Instant::now() < deadline,
            "lost messages across shutdown: {} of {} handled",
            done.lock().unwrap().len(),
            sent.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    second.shutdown().await;
    assert_eq!(*done.lock().unwrap(), ids(&sent));
}

/// After the broker restarts, the same subscription goes on, and nothing
/// acknowledged by the broker is lost.
pub async fn reconnect_after_restart(h: &Harness) {
    if !h.capabilities().persistent {
        return h.skip("reconnect_after_restart", "the transport is not persistent");
    }
    let topic = h.topic("restart");
    let c = h.connect().await;
    let group = Subscription::new(&topic)
        .start(StartPosition::Earliest)
        .group(h.group("restart"));
    let mut stream = c.subscribe(group).await.expect("subscribe");
    let before: Vec<Message> = (0..10).map(numbered).collect();
    publish_all(&c, &topic, &before).await;
    match h.restart().await {
        None => {
            return h.skip(
                "reconnect_after_restart",
                "the harness has no restart command",
            );
        }
        Some(Err(e)) => panic!("restart failed: {}", e.chain()),
        Some(Ok(())) => {}
    }
    let after: Vec<Message> = (10..20).map(numbered).collect();
    for m in &after {
        // During reconnection a publish may fail with a retryable error.
        let deadline = Instant::now() + h.timeout();
        loop {
            match c.publish(&topic, m.clone()).await {
                Ok(_) => break,
                Err(e) if e.is_retryable() && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("publish after restart: {}", e.chain()),
            }
        }
    }
    let mut expected = ids(&before);
    expected.extend(ids(&after));
    let mut got = HashSet::new();
    while got.len() < expected.len() {
        match tokio::time::timeout(h.timeout(), futures::StreamExt::next(&mut stream)).await {
            Ok(Some(Ok(mut d))) => {
                let _ = d.ack().await;
                got.insert(d.message().id());
            }
            // The stream may report the outage; it must not end.
            Ok(Some(Err(_))) => {}
            Ok(None) => panic!("the stream ended at the restart"),
            Err(_) => panic!(
                "{} of {} messages after the restart",
                got.len(),
                expected.len()
            ),
        }
    }
    assert_eq!(got, expected);
}

/// The dead letter of `topic` that `dead` brings: checks id, original topic
/// and reason, and acks it.
async fn expect_dead_letter(
    h: &Harness,
    dead: &mut msg_core::DeliveryStream,
    original: &Message,
    topic: &str,
    reason: &str,
    attempts: u32,
) {
    let mut dl = recv(dead, h.timeout()).await.expect("dead letter");
    let dm = dl.message();
    assert_eq!(dm.id(), original.id());
    assert_eq!(dm.payload(), original.payload());
    for (name, value) in original.headers().iter() {
        assert_eq!(dm.header(name), Some(value), "header {name}");
    }
    assert!(dm.header(headers::DEAD_LETTERED_AT).is_some());
    assert_eq!(dm.header(headers::DEAD_LETTER_REASON), Some(reason));
    assert_eq!(dm.header(headers::ORIGINAL_TOPIC), Some(topic));
    assert_eq!(
        dm.header(headers::ATTEMPTS),
        Some(attempts.to_string().as_str())
    );
    dl.ack().await.expect("ack dead letter");
}

/// A subscription on a group where the transport has groups: the queue
/// (AMQP), consumer (JetStream) or group (Redis, Kafka) every production
/// deployment uses.
fn group_sub(h: &Harness, topic: &str, group: &str) -> Subscription {
    if h.capabilities().consumer_groups {
        sub(topic).group(h.group(group))
    } else {
        sub(topic)
    }
}

/// A subscription allowing two deliveries, its dead-letter topic's
/// stream, and one message published to it.
struct TwoDeliveries {
    topic: String,
    message: Message,
    stream: msg_core::DeliveryStream,
    dead: msg_core::DeliveryStream,
}

impl TwoDeliveries {
    async fn start(h: &Harness, case: &str) -> Self {
        let topic = h.topic(case);
        let c = h.connect().await;
        let dead = c
            .subscribe(sub(&dead_letter_topic(&topic)))
            .await
            .expect("subscribe to the dead-letter topic");
        let stream = c
            .subscribe(group_sub(h, &topic, case).max_deliveries(Some(2)))
            .await
            .expect("subscribe");
        let message = Message::new(format!("{case}: fails every time"));
        c.publish(&topic, message.clone()).await.expect("publish");
        Self {
            topic,
            message,
            stream,
            dead,
        }
    }
}

/// The last failure a subscription's max deliveries allows dead-letters the
/// message with `max deliveries (N) reached`; it never comes again.
pub async fn max_deliveries_then_dead_letter(h: &Harness) {
    if !needs_at_least_once(h, "max_deliveries_then_dead_letter") {
        return;
    }
    let TwoDeliveries {
        topic,
        message: m,
        mut stream,
        mut dead,
    } = TwoDeliveries::start(h, "max-deliveries").await;
    let mut first = recv(&mut stream, h.timeout()).await.expect("attempt 1");
    assert_eq!(first.metadata().attempt, 1);
    first.retry().await.expect("nack");
    let mut second = recv(&mut stream, h.timeout()).await.expect("attempt 2");
    assert_eq!(second.metadata().attempt, 2);
    second
        .retry_after(Duration::from_millis(50))
        .await
        .expect("defer");
    expect_dead_letter(h, &mut dead, &m, &topic, "max deliveries (2) reached", 2).await;
    assert!(
        recv(&mut stream, h.quiet()).await.is_none(),
        "a message past its max deliveries came again"
    );
}

/// A message the broker delivers more often than allowed (its consumers
/// died holding it) is dead-lettered without being handed out again.
pub async fn redelivered_past_max_deliveries_is_dead_lettered(h: &Harness) {
    if !needs_at_least_once(h, "redelivered_past_max_deliveries_is_dead_lettered") {
        return;
    }
    let TwoDeliveries {
        topic,
        message: m,
        mut stream,
        mut dead,
    } = TwoDeliveries::start(h, "crashing").await;
    for attempt in 1..=2 {
        let d = recv(&mut stream, h.timeout())
            .await
            .unwrap_or_else(|| panic!("attempt {attempt}"));
        assert_eq!(d.metadata().attempt, attempt);
        // A handler that crashes settles nothing.
        drop(d);
    }
    // The consumer goes on reading (the third delivery is dead-lettered as
    // the stream reads it); whatever it is handed is a failure.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let consumer = tokio::spawn(async move {
        let mut handed_out = Vec::new();
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                _ = &mut stopped => return handed_out,
                item = futures::StreamExt::next(&mut stream) => match item {
                    Some(Ok(d)) => handed_out.push(d.metadata().attempt),
                    Some(Err(e)) => panic!("stream error: {}", e.chain()),
                    None => return handed_out,
                },
            }
        }
    });
    expect_dead_letter(h, &mut dead, &m, &topic, "max deliveries (2) reached", 3).await;
    tokio::time::sleep(h.quiet()).await;
    let _ = stop.send(());
    let handed_out = consumer.await.expect("consumer task");
    assert!(
        handed_out.is_empty(),
        "a message past its max deliveries was handed out (attempts {handed_out:?})"
    );
}

/// A subscription may name its own dead-letter topic.
pub async fn dead_letter_topic_per_subscription(h: &Harness) {
    if !needs_at_least_once(h, "dead_letter_topic_per_subscription") {
        return;
    }
    let topic = h.topic("own-dlq");
    let failed = h.topic("failed");
    let c = h.connect().await;
    let mut dead = c.subscribe(sub(&failed)).await.expect("subscribe");
    let mut stream = c
        .subscribe(group_sub(h, &topic, "own-dlq").dead_letter_topic(&failed))
        .await
        .expect("subscribe");
    let m = Message::new("poison");
    c.publish(&topic, m.clone()).await.expect("publish");
    let mut d = recv(&mut stream, h.timeout()).await.expect("delivery");
    d.dead_letter("no good").await.expect("reject");
    expect_dead_letter(h, &mut dead, &m, &topic, "no good", 1).await;
}

/// A message keeps its topic when it comes again after a nack and after a
/// defer: routes, metrics and dead-letter topics depend on it.
pub async fn topic_kept_after_retries(h: &Harness) {
    if !needs_at_least_once(h, "topic_kept_after_retries") {
        return;
    }
    let topic = h.topic("kept");
    let c = h.connect().await;
    let mut stream = c
        .subscribe(group_sub(h, &topic, "kept"))
        .await
        .expect("subscribe");
    c.publish(&topic, Message::new("x")).await.expect("publish");
    let mut d = recv(&mut stream, h.timeout()).await.expect("delivery");
    assert_eq!(&*d.metadata().topic, topic.as_str());
    d.retry().await.expect("nack");
    let mut d = recv(&mut stream, h.timeout()).await.expect("after nack");
    assert_eq!(&*d.metadata().topic, topic.as_str(), "topic after a nack");
    d.retry_after(Duration::from_millis(100))
        .await
        .expect("defer");
    let mut d = recv(&mut stream, h.timeout()).await.expect("after defer");
    assert_eq!(&*d.metadata().topic, topic.as_str(), "topic after a defer");
    assert_eq!(d.metadata().attempt, 3);
    d.dead_letter("done").await.expect("reject");
}

/// `*` matches one segment, `>` one or more trailing ones.
pub async fn wildcard_subscriptions(h: &Harness) {
    if !h.capabilities().wildcards {
        return h.skip(
            "wildcard_subscriptions",
            "the transport has no topic patterns",
        );
    }
    let root = h.topic("wild");
    let c = h.connect().await;
    let leaves = ["a", "b", "b.deep"];
    let publish = || async {
        for leaf in leaves {
            c.publish(&format!("{root}.{leaf}"), Message::new(leaf))
                .await
                .expect("publish");
        }
    };
    // Without replay, only a subscription made first sees the messages;
    // with it, patterns may match only topics that exist (Kafka).
    let replay = h.capabilities().replay;
    if replay {
        publish().await;
    }
    let mut one = c
        .subscribe(sub(&format!("{root}.*")))
        .await
        .expect("subscribe *");
    let mut all = c
        .subscribe(sub(&format!("{root}.>")))
        .await
        .expect("subscribe >");
    if !replay {
        publish().await;
    }
    let got: HashSet<String> = collect(&mut one, 2, h.timeout())
        .await
        .iter()
        .map(|d| d.metadata().topic.to_string())
        .collect();
    assert_eq!(
        got,
        HashSet::from([format!("{root}.a"), format!("{root}.b")])
    );
    assert!(
        recv(&mut one, h.quiet()).await.is_none(),
        "'*' matched two segments"
    );
    let got: HashSet<String> = collect(&mut all, 3, h.timeout())
        .await
        .iter()
        .map(|d| d.metadata().topic.to_string())
        .collect();
    assert_eq!(got.len(), 3, "'>' got {got:?}");
}

/// A CloudEvent crosses the broker in binary mode with the transport's
/// binding, and reads back equal.
pub async fn cloudevent_roundtrip(h: &Harness) {
    use msg_core::{Event, JsonCodec, PublisherExt};
    let topic = h.topic("cloudevent");
    let c = h.connect().await;
    let mut stream = c.subscribe(sub(&topic)).await.expect("subscribe");
    // A subject with what bindings must encode: space, `%`, `"`, non-ASCII.
    let event = Event::new("/conformance", "org.msg.test.happened", vec![1u32, 2, 3])
        .with_subject("order 1 \u{2713} 100%41 \"x\"")
        .with_extension(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        );
    c.publish_event(&topic, &event).await.expect("publish");
    let mut d = recv(&mut stream, h.timeout()).await.expect("delivery");
    let prefix = h.capabilities().cloudevents.prefix();
    assert_eq!(
        d.message().header(&format!("{prefix}specversion")),
        Some("1.0"),
        "attributes use the transport's binding"
    );
    let got: Event<Vec<u32>> = Event::from_message(d.message(), &JsonCodec).expect("decode");
    assert_eq!(got.id, event.id);
    assert_eq!(got.source, event.source);
    assert_eq!(got.ty, event.ty);
    assert_eq!(got.subject, event.subject);
    assert_eq!(got.datacontenttype.as_deref(), Some("application/json"));
    assert_eq!(got.extensions, event.extensions);
    assert_eq!(got.data, event.data);
    // Time travels as RFC 3339 with microseconds at least.
    let sent = event.time.expect("time");
    let diff = got
        .time
        .expect("time")
        .duration_since(sent)
        .unwrap_or_else(|e| e.duration());
    assert!(diff < Duration::from_millis(1), "time off by {diff:?}");
    d.ack().await.expect("ack");
}

/// A payload over the transport's limit is refused with
/// `Error::MessageTooLarge`, and the connection goes on working.
pub async fn oversize_message_refused(h: &Harness) {
    let Some(max) = h.capabilities().max_message_size else {
        return h.skip(
            "oversize_message_refused",
            "the transport has no size limit",
        );
    };
    if max > 16 << 20 {
        return h.skip(
            "oversize_message_refused",
            "the transport's limit is over 16 MiB: too large to send in a test",
        );
    }
    let topic = h.topic("oversize");
    let c = h.connect().await;
    let mut stream = c.subscribe(sub(&topic)).await.expect("subscribe");
    match c.publish(&topic, Message::new(vec![7u8; max + 1])).await {
        Err(Error::MessageTooLarge { size, .. }) => assert!(size > max),
        other => panic!(
            "a payload of {} bytes: expected MessageTooLarge, got {other:?}",
            max + 1
        ),
    }
    let ok = Message::new("still works");
    c.publish(&topic, ok.clone()).await.expect("publish after");
    let got = collect(&mut stream, 1, h.timeout()).await;
    assert_eq!(got[0].message().id(), ok.id());
}

/// `publish_with` with an option the transport cannot honour fails with
/// `Unsupported` naming the option and the transport, and publishes
/// nothing; the result is what the capability says.
async fn refused_option(h: &Harness, topic: &str, options: PublishOptions, option: &str) {
    let c = h.connect().await;
    match c
        .publish_with(topic, Message::new("refused"), options)
        .await
    {
        Err(e @ Error::Unsupported { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains(option) && text.contains(h.capabilities().transport),
                "the error names neither the option {option} nor the transport: {text}"
            );
        }
        other => panic!(
            "{option} is not native on {}: expected Unsupported, got {other:?}",
            h.name()
        ),
    }
}

/// A message published with `deliver_at` is not delivered before that time
/// (and a later one without it may overtake it); it carries the time in
/// `msg-deliver-at`. Where it is not native, the publish is refused.
pub async fn deliver_at_not_before(h: &Harness) {
    let topic = h.topic("deliver-at");
    let delay = Duration::from_millis(1500);
    if !h.capabilities().native_deliver_at {
        let c = h.connect().await;
        let mut stream = c.subscribe(sub(&topic)).await.expect("subscribe");
        refused_option(h, &topic, PublishOptions::new().delay(delay), "deliver_at").await;
        let marker = Message::new("marker");
        c.publish(&topic, marker.clone()).await.expect("publish");
        let got = collect(&mut stream, 1, h.timeout()).await;
        assert_eq!(
            got[0].message().id(),
            marker.id(),
            "the refused message arrived"
        );
        return;
    }
    let c = h.connect().await;
    let mut stream = c.subscribe(sub(&topic)).await.expect("subscribe");
    let later = Message::new("later");
    let deliver_at = std::time::SystemTime::now() + delay;
    let published = Instant::now();
    c.publish_with(
        &topic,
        later.clone(),
        PublishOptions::new().deliver_at(deliver_at),
    )
    .await
    .expect("publish with deliver_at");
    let now = Message::new("now");
    c.publish(&topic, now.clone()).await.expect("publish");
    let first = collect(&mut stream, 1, h.timeout()).await;
    assert_eq!(
        first[0].message().id(),
        now.id(),
        "the delayed message came first"
    );
    let second = collect(&mut stream, 1, h.timeout() + delay).await;
    let waited = published.elapsed();
    assert_eq!(second[0].message().id(), later.id());
    assert!(
        waited >= delay && std::time::SystemTime::now() >= deliver_at,
        "delivered after {waited:?}, before deliver_at ({delay:?})"
    );
    assert_eq!(
        second[0].message().header(headers::DELIVER_AT),
        Some(msg_core::raw::time::rfc3339(deliver_at).as_str())
    );
}

/// A message published with a `ttl` that no consumer takes in time is
/// never delivered; where `ttl` is not native, the publish is refused.
pub async fn ttl_expires_undelivered(h: &Harness) {
    let topic = h.topic("ttl");
    if !h.capabilities().native_ttl {
        return refused_option(
            h,
            &topic,
            PublishOptions::new().ttl(Duration::from_secs(60)),
            "ttl",
        )
        .await;
    }
    if !needs_at_least_once(h, "ttl_expires_undelivered") {
        return;
    }
    let c = h.connect().await;
    let group = group_sub(h, &topic, "ttl");
    // The group's queue exists, and no consumer holds what arrives.
    drop(c.subscribe(group.clone()).await.expect("subscribe"));
    let ttl = Duration::from_secs(1);
    let expiring = Message::new("expires");
    c.publish_with(&topic, expiring.clone(), PublishOptions::new().ttl(ttl))
        .await
        .expect("publish with ttl");
    let kept = Message::new("kept");
    c.publish_with(
        &topic,
        kept.clone(),
        PublishOptions::new().ttl(Duration::from_secs(600)),
    )
    .await
    .expect("publish with a long ttl");
    // Brokers count ttls in whole seconds or check them lazily.
    tokio::time::sleep(ttl * 3).await;
    let marker = Message::new("marker");
    c.publish(&topic, marker.clone()).await.expect("publish");
    let mut stream = c.subscribe(group).await.expect("subscribe again");
    let got = collect(&mut stream, 2, h.timeout()).await;
    let got: HashSet<Uuid> = got.iter().map(|d| d.message().id()).collect();
    assert_eq!(
        got,
        ids(&[kept, marker]),
        "the expired message was delivered"
    );
    if let Some(d) = recv(&mut stream, h.quiet()).await {
        panic!("delivered after its ttl: {:?}", d.message());
    }
}

/// A message another client published (with the broker's own client,
/// nothing of msg's: no id, no headers) gets an id that stays the same
/// when it is delivered again, and differs from the id of a message with
/// the same body on another topic: dedup recognises a redelivery and does
/// not drop a stranger.
pub async fn foreign_messages_have_stable_ids(h: &Harness) {
    let (a, b) = (h.topic("foreign-a"), h.topic("foreign-b"));
    let c = h.connect().await;
    let group = h.group("foreign");
    let subscription = |topic: &str| {
        let s = sub(topic);
        if h.capabilities().consumer_groups {
            s.group(&group)
        } else {
            s
        }
    };
    let mut on_a = c.subscribe(subscription(&a)).await.expect("subscribe");
    let mut on_b = c.subscribe(subscription(&b)).await.expect("subscribe");
    let body = b"the same body";
    match h.foreign_publish(&a, body).await {
        None => {
            return h.skip(
                "foreign_messages_have_stable_ids",
                "the harness has no other client to publish with",
            );
        }
        Some(published) => published.expect("publish with the broker's own client"),
    }
    h.foreign_publish(&b, body)
        .await
        .expect("a foreign publisher")
        .expect("publish with the broker's own client");
    let mut first = recv(&mut on_a, h.timeout())
        .await
        .expect("the foreign message");
    let id = first.message().id();
    if h.capabilities().at_least_once {
        first.retry().await.expect("retry");
        let mut again = recv(&mut on_a, h.timeout())
            .await
            .expect("the foreign message, delivered again");
        assert_eq!(
            again.message().id(),
            id,
            "{}: a foreign message's id changed when it was delivered again",
            h.name()
        );
        again.ack().await.expect("ack");
    } else {
        first.ack().await.expect("ack");
    }
    let mut other = recv(&mut on_b, h.timeout())
        .await
        .expect("the other topic's message");
    assert_ne!(
        other.message().id(),
        id,
        "{}: the same body on another topic got the same id",
        h.name()
    );
    other.ack().await.expect("ack");
}

/// `reply_to` reaches the consumer in the `msg-reply-to` header.
pub async fn reply_to_carried(h: &Harness) {
    let topic = h.topic("reply-to");
    if !h.capabilities().native_reply_to {
        return refused_option(h, &topic, PublishOptions::new().reply_to("r"), "reply_to").await;
    }
    let c = h.connect().await;
    let mut stream = c.subscribe(sub(&topic)).await.expect("subscribe");
    let replies = h.topic("replies");
    c.publish_with(
        &topic,
        Message::new("question"),
        PublishOptions::new().reply_to(&replies),
    )
    .await
    .expect("publish with reply_to");
    let got = collect(&mut stream, 1, h.timeout()).await;
    assert_eq!(
        got[0].message().header(headers::REPLY_TO),
        Some(replies.as_str())
    );
}

/// Receipts come back in publish order, one per message; where the broker
/// reports positions, each message has its own, and they grow in publish
/// order within each log (a Kafka partition).
pub async fn receipts_name_positions(h: &Harness) {
    let topic = h.topic("receipts");
    let c = h.connect().await;
    let mut stream = c.subscribe(sub(&topic)).await.expect("subscribe");
    let single = c.publish(&topic, numbered(0)).await.expect("publish");
    let batch = c
        .publish_batch(&topic, (1..4).map(numbered).collect())
        .await
        .expect("publish batch");
    assert_eq!(batch.len(), 3, "one receipt per message");
    collect(&mut stream, 4, h.timeout()).await;
    let receipts: Vec<_> = std::iter::once(single).chain(batch).collect();
    let positions: Vec<_> = receipts.iter().filter_map(|r| r.position.clone()).collect();
    if positions.is_empty() {
        return;
    }
    assert_eq!(
        positions.len(),
        4,
        "some receipts lack a position: {receipts:?}"
    );
    // (the log the position is in, where in it). Unkeyed messages may go
    // to different Kafka partitions; order holds within each.
    let order = |p: &Position| match p {
        Position::Offset { partition, offset } => (*partition as u64, (*offset as u64, 0)),
        Position::Sequence { sequence, .. } => (0, (*sequence, 0)),
        Position::EntryId(id) => {
            let (ms, seq) = id.split_once('-').expect("an entry id is <ms>-<seq>");
            (0, (ms.parse().expect("ms"), seq.parse().expect("seq")))
        }
        other => panic!("unknown position {other:?}"),
    };
    let keys: Vec<_> = positions.iter().map(order).collect();
    for (i, earlier) in keys.iter().enumerate() {
        for later in &keys[i + 1..] {
            assert!(
                earlier.0 != later.0 || earlier.1 < later.1,
                "positions do not grow in publish order: {positions:?}"
            );
        }
    }
}

/// A batch of which one message is refused says exactly which messages
/// were accepted: those arrive, and no other.
pub async fn batch_reports_what_was_accepted(h: &Harness) {
    let topic = h.topic("batch-partial");
    let c = h.connect().await;
    let mut stream = c.subscribe(sub(&topic)).await.expect("subscribe");
    // A message the transport refuses: too large where the limit is small
    // enough to send, else one with an invalid header.
    let refused = match h.capabilities().max_message_size {
        Some(max) if max <= 16 << 20 => Message::new(vec![1u8; max + 1]),
        _ => Message::new("bad header").with_header("bad\nname", "x"),
    };
    let batch = vec![numbered(0), numbered(1), refused, numbered(3)];
    let sent = batch.clone();
    let e = match c.publish_batch(&topic, batch).await {
        Err(e) => e,
        Ok(receipts) => panic!("a batch with a refused message was accepted: {receipts:?}"),
    };
    assert_eq!(e.receipts().len(), 4, "{e}");
    assert!(
        !e.is_accepted(2),
        "the refused message is reported accepted"
    );
    assert!(
        matches!(
            e.error(),
            Error::MessageTooLarge { .. } | Error::InvalidHeader { .. }
        ),
        "{e}"
    );
    let accepted: Vec<Message> = e.accepted().map(|(i, _)| sent[i].clone()).collect();
    let marker = Message::new("marker");
    c.publish(&topic, marker.clone()).await.expect("publish");
    let mut expected = accepted.clone();
    expected.push(marker);
    let got = collect(&mut stream, expected.len(), h.timeout()).await;
    let got_ids: HashSet<Uuid> = got.iter().map(|d| d.message().id()).collect();
    assert_eq!(
        got_ids,
        ids(&expected),
        "what arrived is not what was accepted"
    );
    if let Some(d) = recv(&mut stream, h.quiet()).await {
        panic!(
            "a message not reported accepted arrived: {:?}",
            d.message().header("seq")
        );
    }
}

/// A topic published to is among the broker's topics, where the
/// transport lists them.
pub async fn topics_are_listed(h: &Harness) {
    let topic = h.topic("listed");
    let c = h.connect().await;
    c.publish(&topic, Message::new("here"))
        .await
        .expect("publish");
    let deadline = Instant::now() + h.timeout();
    loop {
        match c.topics().await {
            Err(Error::Unsupported { .. }) => {
                return h.skip("topics_are_listed", "the transport lists no topics");
            }
            Err(e) => panic!("topics: {}", e.chain()),
            Ok(topics) if topics.contains(&topic) => {
                assert!(topics.windows(2).all(|w| w[0] <= w[1]), "sorted");
                return;
            }
            Ok(topics) if Instant::now() > deadline => {
                panic!("{topic} is not among the {} topics listed", topics.len())
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
