//! The Redis stores and rate limit, against a real Redis started by
//! `cargo xtask brokers up redis`.
#![cfg(feature = "redis")]

use std::time::Duration;

use fred::prelude::{Builder, Client, ClientLike};
use msg_core::{Message, Metadata, Received, Uuid, service};
use msg_middleware::dedup::DedupStore;
use msg_middleware::poison::PoisonStore;
use msg_middleware::redis::{RedisDedupStore, RedisPoisonStore, RedisRateLimitLayer};
use msg_testkit::BrokerEnv;
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

async fn client() -> Client {
    let url = BrokerEnv::get("redis").url().to_owned();
    let client = Builder::from_config(fred::types::config::Config::from_url(&url).unwrap())
        .build()
        .unwrap();
    client.init().await.unwrap();
    client
}

fn prefix(name: &str) -> String {
    format!("mt:{name}:{}", &Uuid::new_v4().simple().to_string()[..12])
}

#[tokio::test]
async fn dedup_ids_are_shared_and_expire() {
    let (a, b) = (client().await, client().await);
    let p = prefix("dedup");
    let one = RedisDedupStore::new(a, p.clone(), Duration::from_millis(300));
    let other = RedisDedupStore::new(b, p, Duration::from_millis(300));
    let id = Uuid::now_v7();
    assert!(!one.contains(id).await.unwrap());
    one.mark(id).await.unwrap();
    assert!(
        other.contains(id).await.unwrap(),
        "another instance sees it"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !other.contains(id).await.unwrap(),
        "expired after the window"
    );
}

#[tokio::test]
async fn poison_counts_quarantine_and_release() {
    let store = RedisPoisonStore::new(client().await, prefix("poison"), Duration::from_secs(60));
    let id = Uuid::now_v7();
    assert_eq!(store.record_failure(id).await.unwrap(), 1);
    assert_eq!(store.record_failure(id).await.unwrap(), 2);
    store.clear(id).await.unwrap();
    assert_eq!(store.record_failure(id).await.unwrap(), 1, "cleared");
    store.quarantine(id).await.unwrap();
    assert!(store.is_quarantined(id).await.unwrap());
    assert_eq!(store.quarantined().await.unwrap(), vec![id]);
    assert!(store.release(id).await.unwrap());
    assert!(!store.is_quarantined(id).await.unwrap());
    assert!(
        !store.release(id).await.unwrap(),
        "not quarantined any more"
    );
    assert_eq!(
        store.record_failure(id).await.unwrap(),
        1,
        "the count restarted"
    );
}

#[tokio::test]
async fn the_rate_limit_holds_across_instances() {
    let p = prefix("rate");
    let handler = || service(|_r: Received| async { Ok(()) });
    let first = RedisRateLimitLayer::new(client().await, p.clone(), 3, Duration::from_millis(500))
        .layer(handler());
    let second =
        RedisRateLimitLayer::new(client().await, p, 3, Duration::from_millis(500)).layer(handler());
    let received = || Received {
        message: Message::new("x"),
        metadata: Metadata::new("t"),
    };
    let started = Instant::now();
    for i in 0..7 {
        let service = if i % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        service.oneshot(received()).await.unwrap();
    }
    // Seven calls at three per window take at least two window changes.
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
}
