//! Typed events through the router on the in-process broker, from an outbox
//! in an embedded SQLite file.
//!
//! The shop writes each order to its database and, in the same
//! transaction, enqueues the order as a CloudEvent in the outbox; a relay
//! publishes what committed. Two consumer groups each receive
//! every order: billing turns an order into an invoice (a message the router
//! publishes before it acks the order), shipping ships it. One order has no
//! amount: billing rejects it as permanent, so it ends in the dead-letter
//! topic `orders.placed.dlq`, where an ops handler reads the reason. For
//! each invoice, billing schedules a payment reminder in the same SQLite
//! file (keyed by order, so a redelivered order does not schedule twice);
//! the scheduler's runner publishes it when it is due.
//!
//! Run: `cargo run -p msg --features outbox,scheduler,sqlite --example quickstart`

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use msg::outbox::Outbox;
use msg::scheduler::{IfExists, ScheduleOptions, Scheduler, When};
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
    reminded: AtomicUsize,
    dead_letters: AtomicUsize,
}

/// What the handlers share: the tally, and the scheduler for reminders.
struct Shop {
    tally: Tally,
    scheduler: Scheduler,
}

impl Tally {
    fn done(&self) -> bool {
        self.billed.load(Ordering::SeqCst) == 2
            && self.shipped.load(Ordering::SeqCst) == 3
            && self.invoiced.load(Ordering::SeqCst) == 2
            && self.reminded.load(Ordering::SeqCst) == 2
            && self.dead_letters.load(Ordering::SeqCst) == 1
    }
}

async fn bill(
    State(shop): State<Arc<Shop>>,
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
    shop.tally.billed.fetch_add(1, Ordering::SeqCst);
    println!(
        "billing:  order {} billed {} cents",
        order.order_id, order.amount_cents
    );
    let reminder = Message::new(format!("order {} is due for payment", order.order_id));
    let once_per_order = ScheduleOptions::new()
        .key(format!("reminder-{}", order.order_id))
        .if_exists(IfExists::Keep);
    shop.scheduler
        .schedule_with(
            "invoices.reminder",
            reminder,
            When::after(Duration::from_millis(300)),
            once_per_order,
        )
        .await
        .map_err(HandlerError::retry)?;
    let invoice = InvoiceCreated {
        order_id: order.order_id,
        total_cents: order.amount_cents,
    };
    Ok(Outgoing::json("invoices.created", &invoice)?)
}

async fn ship(
    State(shop): State<Arc<Shop>>,
    order: Event<OrderPlaced>,
) -> Result<(), HandlerError> {
    shop.tally.shipped.fetch_add(1, Ordering::SeqCst);
    println!("shipping: order {} shipped", order.data.order_id);
    Ok(())
}

async fn record_invoice(
    State(shop): State<Arc<Shop>>,
    Json(invoice): Json<InvoiceCreated>,
) -> Result<(), HandlerError> {
    shop.tally.invoiced.fetch_add(1, Ordering::SeqCst);
    println!(
        "invoices: invoice for order {} over {} cents",
        invoice.order_id, invoice.total_cents
    );
    Ok(())
}

async fn remind(State(shop): State<Arc<Shop>>, msg: Message) -> Result<(), HandlerError> {
    shop.tally.reminded.fetch_add(1, Ordering::SeqCst);
    println!("reminder: {}", String::from_utf8_lossy(msg.payload()));
    Ok(())
}

async fn inspect_dead_letter(
    State(shop): State<Arc<Shop>>,
    msg: Message,
) -> Result<(), HandlerError> {
    shop.tally.dead_letters.fetch_add(1, Ordering::SeqCst);
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

    // The shop's database, an SQLite file: its orders, its outbox and its
    // schedules.
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
    let scheduler = Scheduler::sqlite(db.clone());
    scheduler.migrate().await?;
    let runner = scheduler.runner(conn.clone()).start();

    let shop = Arc::new(Shop {
        tally: Tally::default(),
        scheduler,
    });
    let router = Router::new(conn.clone(), conn.clone())
        .with_state(shop.clone())
        .handle(Subscription::new("orders.placed").group("billing"), bill)
        .handle(Subscription::new("orders.placed").group("shipping"), ship)
        .handle(
            Subscription::new("invoices.created").group("accounting"),
            record_invoice,
        )
        .handle(
            Subscription::new("invoices.reminder").group("accounting"),
            remind,
        )
        .handle(
            Subscription::new("orders.placed.dlq").group("ops"),
            inspect_dead_letter,
        )
        .start()
        .await?;

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

    let tally = &shop.tally;
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        while !tally.done() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    relay.shutdown().await;
    runner.shutdown().await;
    router.shutdown().await;
    db.close().await;
    std::fs::remove_dir_all(&dir)?;
    waited.context("the orders were not all handled within 10 s")?;

    let summary = format!(
        "{} billed, {} shipped, {} invoiced, {} reminded, {} dead-lettered",
        tally.billed.load(Ordering::SeqCst),
        tally.shipped.load(Ordering::SeqCst),
        tally.invoiced.load(Ordering::SeqCst),
        tally.reminded.load(Ordering::SeqCst),
        tally.dead_letters.load(Ordering::SeqCst),
    );
    if !tally.done() {
        bail!("unexpected outcome: {summary}");
    }
    println!("done:     {summary}");
    Ok(())
}
