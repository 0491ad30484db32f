//! A broker that went away is not flooded with connects, and is connected
//! to again soon after it is back: against a real RabbitMQ started by
//! `cargo xtask brokers up rabbitmq`, reached through a TCP gate in the
//! test that can cut the connection and turn connects away.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use msg_amqp::{AmqpBroker, AmqpConfig};
use msg_core::{Message, Publisher};
use msg_testkit::BrokerEnv;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;

/// A TCP forwarder to the broker that counts the connects it accepts.
/// While down, it closes each one at once, as a broker that is starting
/// does; going down also cuts the connections it forwards.
struct Gate {
    /// The broker's URL with the gate's address in place of the broker's.
    url: String,
    up: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    cut: broadcast::Sender<()>,
}

impl Gate {
    async fn to(broker_url: &str) -> Self {
        // amqp://user:password@host:port/vhost?query
        let (scheme, rest) = broker_url.split_once("://").expect("a URL");
        let (user, rest) = rest.rsplit_once('@').map_or(("", rest), |(u, r)| (u, r));
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (upstream, path) = rest.split_at(end);
        let upstream = upstream.to_owned();

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let at = listener.local_addr().expect("address");
        let at_sign = if user.is_empty() { "" } else { "@" };
        let url = format!("{scheme}://{user}{at_sign}{at}{path}");
        let up = Arc::new(AtomicBool::new(true));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (cut, _) = broadcast::channel(1);
        let gate = Gate {
            url,
            up: up.clone(),
            accepted: accepted.clone(),
            cut: cut.clone(),
        };
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                accepted.fetch_add(1, Ordering::SeqCst);
                if !up.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let mut cut = cut.subscribe();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.recv() => {}
                    }
                });
            }
        });
        gate
    }

    fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        let _ = self.cut.send(());
    }

    fn up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

#[tokio::test]
async fn a_broker_that_is_away_is_not_flooded_with_connects() {
    let gate = Gate::to(BrokerEnv::get("rabbitmq").url()).await;
    let broker = AmqpBroker::connect(AmqpConfig::from_url(&gate.url).expect("URL"))
        .await
        .expect("connect through the gate");
    let topic = format!("reconnect.{}", msg_core::Uuid::new_v4().simple());
    broker
        .publish(&topic, Message::new("before"))
        .await
        .expect("a publish while the broker is there");

    gate.down();
    let before = gate.accepted();
    // 32 publishers, each trying again 10 ms after a failure, for 3 s.
    let outage = Duration::from_secs(3);
    let started = Instant::now();
    let publishers = (0..32).map(|_| {
        let broker = broker.clone();
        let topic = topic.clone();
        tokio::spawn(async move {
            let mut failures = 0_usize;
            while started.elapsed() < outage {
                match broker.publish(&topic, Message::new("during")).await {
                    Ok(_) => panic!("published through a gate that is down"),
                    Err(e) => {
                        assert!(e.is_connection(), "not a connection error: {e:?}");
                        failures += 1;
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            failures
        })
    });
    let failures: usize = futures::future::join_all(publishers)
        .await
        .into_iter()
        .map(|r| r.expect("publisher"))
        .sum();
    let connects = gate.accepted() - before;
    println!("{failures} failed publishes, {connects} connects in {outage:?}");
    assert!(failures > 1_000, "the publishers kept trying: {failures}");
    // 100, 200, 400, 800, 1000 ms apart: 5 or 6 in 3 s.
    assert!(
        (1..=8).contains(&connects),
        "{connects} connects while the broker was away for {outage:?}"
    );

    gate.up();
    let back = Instant::now();
    loop {
        match broker.publish(&topic, Message::new("after")).await {
            Ok(_) => break,
            Err(e) if back.elapsed() < Duration::from_secs(10) => {
                assert!(e.is_connection(), "{e:?}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("still failing 10 s after the broker came back: {e:?}"),
        }
    }
    // The longest pause is 1 s: back within it (and a connect's time).
    let waited = back.elapsed();
    println!("published again {waited:?} after the broker came back");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
}
