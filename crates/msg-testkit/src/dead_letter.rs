//! The dead-letter manager's case: list, stats, get, replay and purge over
//! what the transport dead-lettered itself.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use msg_core::dead_letter::{Filter, REPLAY_COUNT, Replay};
use msg_core::{Error, Message, Publisher, StartPosition, Subscriber, Subscription, Uuid};
use tokio::time::Instant;

use crate::harness::{Harness, collect};

const REASONS: [&str; 3] = [
    "timeout calling billing",
    "bad payload: expected an order",
    "no such customer",
];

/// 100 messages dead-lettered with three reasons: `list` pages through all
/// of them; `stats` counts them by reason; `get` finds one by id; `replay`
/// of one reason's messages makes a consumer receive exactly those, marked
/// as replayed; `purge` removes the rest; the counts agree at each step.
/// A transport that cannot remove dead letters says so: replay keeps them
/// and purge is `Unsupported`.
pub async fn dead_letter_manager(h: &Harness) {
    const CASE: &str = "dead_letter_manager";
    let c = h.connect().await;
    let manager = match c.dead_letters() {
        Ok(manager) => manager,
        Err(Error::Unsupported { .. }) => {
            return h.skip(CASE, "the connection has no dead-letter reader");
        }
        Err(e) => panic!("dead_letters: {}", e.chain()),
    };
    if !manager.capabilities().read {
        return h.skip(CASE, "the transport keeps no dead letters to read");
    }
    let topic = h.topic("dlq-manager");
    let group_name = h.group("dlq");
    let dlq = h.dead_letters_at(&topic, &group_name);
    let group = Subscription::new(&topic)
        .group(&group_name)
        .start(StartPosition::Earliest);
    let mut stream = c.subscribe(group).await.expect("subscribe");
    let sent: Vec<Message> = (0..100)
        .map(|i| Message::new(format!("order {i}")))
        .collect();
    for m in &sent {
        c.publish(&topic, m.clone()).await.expect("publish");
    }
    let mut reason_of = BTreeMap::new();
    let mut seen = HashSet::new();
    while seen.len() < 100 {
        let Some(mut d) = crate::harness::recv(&mut stream, h.timeout()).await else {
            panic!("{} of 100 delivered", seen.len());
        };
        let i: usize = std::str::from_utf8(d.message().payload()).unwrap()[6..]
            .parse()
            .unwrap();
        if seen.insert(i) {
            reason_of.insert(d.message().id(), REASONS[i % 3]);
        }
        d.dead_letter(REASONS[i % 3]).await.expect("dead-letter");
    }
    // Dead letters are written as they are settled; wait until all are in.
    let deadline = Instant::now() + h.timeout();
    let stats = loop {
        let stats = manager.stats(&dlq).await.expect("stats");
        if stats.total >= 100 || Instant::now() > deadline {
            break stats;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(stats.total, 100);
    let expected: BTreeMap<String, u64> = [(REASONS[0], 34), (REASONS[1], 33), (REASONS[2], 33)]
        .into_iter()
        .map(|(r, n)| (r.to_owned(), n))
        .collect();
    assert_eq!(stats.by_reason, expected);
    assert!(stats.oldest.is_some() && stats.oldest <= stats.newest);

    // Pages of 30 through all 100, each once.
    let mut listed = Vec::new();
    let mut after = None;
    loop {
        let page = manager
            .list(&dlq, &Filter::new(), after.as_deref(), 30)
            .await
            .expect("list");
        assert!(page.letters.len() <= 30);
        listed.extend(page.letters.iter().map(|l| l.id()));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let sent_ids: HashSet<Uuid> = sent.iter().map(Message::id).collect();
    assert_eq!(listed.len(), 100, "every dead letter listed once");
    assert_eq!(listed.iter().copied().collect::<HashSet<_>>(), sent_ids);
    let one = manager
        .get(&dlq, sent[7].id())
        .await
        .expect("get")
        .expect("found");
    assert_eq!(one.reason(), Some(REASONS[7 % 3]));
    assert_eq!(one.original_topic(), Some(topic.as_str()));
    assert_eq!(one.message().payload().as_ref(), b"order 7");

    // Replay one reason's: exactly those come back, marked.
    let bad = Filter::new().reason_contains("bad payload");
    let dry = manager
        .replay(&dlq, &bad, Replay::new().dry_run())
        .await
        .expect("dry run");
    assert_eq!(dry.replayed, 33);
    let report = manager
        .replay(&dlq, &bad, Replay::new())
        .await
        .expect("replay");
    assert_eq!(report.replayed, 33);
    let replayed = collect(&mut stream, 33, h.timeout()).await;
    let want: HashSet<Uuid> = reason_of
        .iter()
        .filter(|(_, r)| **r == REASONS[1])
        .map(|(id, _)| *id)
        .collect();
    let got: HashSet<Uuid> = replayed.iter().map(|d| d.message().id()).collect();
    assert_eq!(
        got, want,
        "exactly the replayed reason's messages, with their ids"
    );
    assert!(
        replayed
            .iter()
            .all(|d| d.message().header(REPLAY_COUNT) == Some("1"))
    );
    let removes = manager.capabilities().delete;
    let left = manager.stats(&dlq).await.expect("stats").total;
    if removes {
        assert_eq!(report.removed, 33);
        assert_eq!(left, 67, "the replayed ones left the dead-letter topic");
        assert_eq!(
            manager.purge(&dlq, &Filter::new()).await.expect("purge"),
            67
        );
        assert_eq!(manager.stats(&dlq).await.expect("stats").total, 0);
    } else {
        assert_eq!(report.removed, 0);
        assert_eq!(left, 100, "a transport that cannot remove keeps them");
        let purge = manager.purge(&dlq, &Filter::new()).await;
        assert!(matches!(purge, Err(Error::Unsupported { .. })), "{purge:?}");
    }
    // Nothing else arrives.
    assert!(crate::harness::recv(&mut stream, h.quiet()).await.is_none());
}
