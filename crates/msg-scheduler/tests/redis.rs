//! The Redis store: the server `cargo xtask brokers up redis` starts (or
//! `MSG_TEST_REDIS_URL`). Each case works under a prefix of its own.
#![cfg(feature = "redis")]

mod support;

use std::sync::Arc;

use msg_scheduler::Scheduler;
use msg_scheduler::store::Store;
use msg_scheduler::store::redis::RedisStore;

/// A connected store under `prefix`.
async fn store(prefix: &str) -> RedisStore {
    let url = msg_testkit::BrokerEnv::get("redis").url().to_owned();
    let store = RedisStore::connect_url(&url).unwrap().with_prefix(prefix);
    store
        .migrate()
        .await
        .unwrap_or_else(|e| panic!("Redis at {url}: {e} (start it: cargo xtask brokers up redis)"));
    store
}

fn prefix() -> String {
    format!("sched-test:{}", msg_core::Uuid::new_v4().simple())
}

async fn redis() -> (Scheduler, Arc<dyn Store>) {
    let prefix = prefix();
    (
        Scheduler::new(store(&prefix).await),
        Arc::new(store(&prefix).await),
    )
}

store_cases!(redis);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_early_each_once_with_two_runners() {
    let prefix = prefix();
    let a = Scheduler::new(store(&prefix).await);
    let b = Scheduler::new(store(&prefix).await);
    support::never_early_each_once_with_two_runners(a, b, 10_000).await;
}
