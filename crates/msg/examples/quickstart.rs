//! Typed events through the router on the in-process broker, from an outbox
//! in an embedded SQLite file.
//!
//! The shop writes each order to its database and, in the same
//! transaction, enqueues the order as a CloudEvent in the outbox; a relay
//! publishes what committed. Two consumer groups each receive
//! every order: billing turns an order into an invoice (a message the router
//! publishes before it acks the order), shipping ships it. One order has no
//! amount: billing rejects it as permanent, so it ends in the dead-letter
//! topic `orders.placed.dlq`, where an ops handler reads the reason.
//!
//! Run: `cargo run -p msg --features outbox,sqlite --example quickstart`

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use msg::outbox::Outbox;
use msg::{Event, HandlerError, Json, Message, Outgoing, Router, State, Subscription, headers};
use serde::{Deserialize, Serialize};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OrderPlaced {
    order_id: u32,
    amount_cents: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct InvoiceCreated {
    order_id: u32,
    total_cents: u64,
}

#[derive(Default)]
struct Tally {
    billed: AtomicUsize,
    shipped: AtomicUsize,
    invoiced: AtomicUsize,
    dead_letters: AtomicUsize,
}

impl Tally {
    fn done(&self) -> bool {
        self.billed.load(Ordering::SeqCst) == 2
            && self.shipped.load(Ordering::SeqCst) == 3
            && self.invoiced.load(Ordering::SeqCst) == 2
            && self.dead_letters.load(Ordering::SeqCst) == 1
    }
}

async fn bill(
    State(tally): State<Arc<Tally>>,
    order: Event<OrderPlaced>,
) -> Result<Outgoing, HandlerError> {
    let order = order.data;
    if order.amount_cents == 0 {
        // Retrying cannot fix this order: dead-letter it.
        return Err(HandlerError::dead_letter(format!(
            "order {} has no amount",
            order.order_id
        )));
    }
    tally.billed.fetch_add(1, Ordering::SeqCst);
    println!(
        "billing:  order {} billed {} cents",
        order.order_id, order.amount_cents
    );
    let invoice = InvoiceCreated {
        order_id: order.order_id,
        total_cents: order.amount_cents,
    };
    Ok(Outgoing::json("invoices.created", &invoice)?)
}

async fn ship(
    State(tally): State<Arc<Tally>>,
    order: Event<OrderPlaced>,
) -> Result<(), HandlerError> {
    tally.shipped.fetch_add(1, Ordering::SeqCst);
    println!("shipping: order {} shipped", order.data.order_id);
    Ok(())
}

async fn record_invoice(
    State(tally): State<Arc<Tally>>,
    Json(invoice): Json<InvoiceCreated>,
) -> Result<(), HandlerError> {
    tally.invoiced.fetch_add(1, Ordering::SeqCst);
    println!(
        "invoices: invoice for order {} over {} cents",
        invoice.order_id, invoice.total_cents
    );
    Ok(())
}

async fn inspect_dead_letter(
    State(tally): State<Arc<Tally>>,
    msg: Message,
) -> Result<(), HandlerError> {
    tally.dead_letters.fetch_add(1, Ordering::SeqCst);
    println!(
        "ops:      dead letter {} from {}: {}",
        msg.id(),
        msg.header(headers::ORIGINAL_TOPIC).unwrap_or("?"),
        msg.header(headers::DEAD_LETTER_REASON).unwrap_or("?"),
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let conn = msg::connect("memory://quickstart").await?;
    let tally = Arc::new(Tally::default());

    let router = Router::new(conn.clone(), conn.clone())
        .with_state(tally.clone())
        .handle(Subscription::new("orders.placed").group("billing"), bill)
        .handle(Subscription::new("orders.placed").group("shipping"), ship)
        .handle(
            Subscription::new("invoices.created").group("accounting"),
            record_invoice,
        )
        .handle(
            Subscription::new("orders.placed.dlq").group("ops"),
            inspect_dead_letter,
        )
        .start()
        .await?;

    // The shop's database, an SQLite file: its orders and its outbox.
    let dir = std::env::temp_dir().join(format!("msg-quickstart-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let db = SqlitePool::connect_with(
        SqliteConnectOptions::new()
            .filename(dir.join("shop.db"))
            .create_if_missing(true),
    )
    .await?;
    sqlx::query("CREATE TABLE orders (id INTEGER PRIMARY KEY, amount_cents INTEGER NOT NULL)")
        .execute(&db)
        .await?;
    let outbox = Outbox::sqlite(db.clone());
    outbox.migrate().await?;
    let relay = outbox.relay(conn.clone()).start();

    for (order_id, amount_cents) in [(1, 2_500), (2, 0), (3, 990)] {
        // The order and its event commit together, or neither does.
        let mut tx = db.begin().await?;
        sqlx::query("INSERT INTO orders (id, amount_cents) VALUES (?, ?)")
            .bind(i64::from(order_id))
            .bind(i64::try_from(amount_cents)?)
            .execute(&mut *tx)
            .await?;
        let event = Event::new(
            "/shop",
            "com.example.order.placed",
            OrderPlaced {
                order_id,
                amount_cents,
            },
        )
        .with_subject(format!("order-{order_id}"));
        outbox
            .enqueue_event(&mut tx, "orders.placed", &event)
            .await?;
        tx.commit().await?;
    }

    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        while !tally.done() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    relay.shutdown().await;
    router.shutdown().await;
    db.close().await;
    std::fs::remove_dir_all(&dir)?;
    waited.context("the orders were not all handled within 10 s")?;

    let summary = format!(
        "{} billed, {} shipped, {} invoiced, {} dead-lettered",
        tally.billed.load(Ordering::SeqCst),
        tally.shipped.load(Ordering::SeqCst),
        tally.invoiced.load(Ordering::SeqCst),
        tally.dead_letters.load(Ordering::SeqCst),
    );
    if !tally.done() {
        bail!("unexpected outcome: {summary}");
    }
    println!("done:     {summary}");
    Ok(())
}
