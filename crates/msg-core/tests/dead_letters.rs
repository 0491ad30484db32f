//! The dead-letter manager over the in-process broker: progress and
//! filters.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use msg_core::dead_letter::{DeadLetters, Filter, Replay};
use msg_core::{Message, Publisher, StartPosition, Subscriber, Subscription};
use msg_memory::{MemoryBroker, MemoryConfig};

async fn five_dead_letters() -> (MemoryBroker, DeadLetters) {
    let broker = MemoryBroker::with_config(MemoryConfig::default().retention(100)).unwrap();
    let mut stream = broker
        .subscribe(
            Subscription::new("orders")
                .group("g")
                .start(StartPosition::Earliest),
        )
        .await
        .unwrap();
    for i in 0..5 {
        broker
            .publish("orders", Message::new(format!("m{i}")))
            .await
            .unwrap();
    }
    for i in 0..5 {
        let mut d = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let reason = if i < 2 { "timeout" } else { "bad payload" };
        d.dead_letter(reason).await.unwrap();
    }
    let manager = DeadLetters::new(Arc::new(broker.clone()), Arc::new(broker.clone()));
    (broker, manager)
}

#[tokio::test]
async fn replay_and_purge_report_their_progress() {
    let (_broker, dlq) = five_dead_letters().await;
    let mut seen = Vec::new();
    let report = dlq
        .replay_with_progress(
            "orders.dlq",
            &Filter::new().reason_contains("bad"),
            Replay::new().keep(),
            |done, of| seen.push((done, of)),
        )
        .await
        .unwrap();
    assert_eq!(report.replayed, 3);
    assert_eq!(seen.first(), Some(&(0, 3)));
    assert_eq!(seen.last(), Some(&(3, 3)));
    assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "{seen:?}");
    let mut purged = Vec::new();
    let removed = dlq
        .purge_with_progress("orders.dlq", &Filter::new(), |done, of| {
            purged.push((done, of))
        })
        .await
        .unwrap();
    assert_eq!(removed, 5, "kept on replay, so all five are there");
    assert_eq!(purged.last(), Some(&(5, 5)));
}

#[tokio::test]
async fn filters_choose_by_reason_attempts_time_and_replays() {
    let (_broker, dlq) = five_dead_letters().await;
    let count = |filter: Filter| {
        let dlq = dlq.clone();
        async move {
            dlq.list("orders.dlq", &filter, None, 100)
                .await
                .unwrap()
                .letters
                .len()
        }
    };
    assert_eq!(count(Filter::new()).await, 5);
    assert_eq!(count(Filter::new().reason_contains("timeout")).await, 2);
    assert_eq!(count(Filter::new().original_topic("orders")).await, 5);
    assert_eq!(count(Filter::new().original_topic("other")).await, 0);
    assert_eq!(count(Filter::new().min_attempts(1)).await, 5);
    assert_eq!(count(Filter::new().min_attempts(2)).await, 0);
    let later = std::time::SystemTime::now() + Duration::from_secs(60);
    assert_eq!(count(Filter::new().since(later)).await, 0);
    assert_eq!(count(Filter::new().until(later)).await, 5);
    assert_eq!(count(Filter::new().replayed(true)).await, 0);
    assert_eq!(count(Filter::new().replayed(false)).await, 5);
}
