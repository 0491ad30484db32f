//! Consume orders, record each in SQLite, publish an invoice; an order
//! whose write keeps failing is tried three times, then dead-lettered.
//!
//! The in-process broker and an SQLite file in the temporary directory:
//! no server. One order has no amount, which the table refuses (a CHECK
//! constraint): its handler runs three times and the order ends in
//! `orders.placed.dlq` with the reason.
//!
//! Run: `cargo run -p msg --example billing`

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, ensure};
use msg::middleware::RetryLayer;
use msg::{
    HandlerError, HandlerOptions, Json, Message, PublisherExt, Router, State, Subscription, headers,
};
use serde::{Deserialize, Serialize};
use sqlx::SqlitePool;

#[derive(Serialize, Deserialize)]
struct OrderPlaced {
    order_id: i64,
    amount_cents: i64,
}

#[derive(Serialize, Deserialize)]
struct InvoiceCreated {
    order_id: i64,
    total_cents: i64,
}

#[derive(Clone)]
struct App {
    db: SqlitePool,
    invoices: Arc<AtomicUsize>,
    dead_letters: Arc<AtomicUsize>,
}

/// Records the order and returns its invoice, which the route publishes to
/// `invoices.created`. A database error is retried (`?`).
async fn bill(
    State(app): State<App>,
    Json(order): Json<OrderPlaced>,
) -> Result<Json<InvoiceCreated>, HandlerError> {
    sqlx::query("INSERT OR REPLACE INTO billed (order_id, amount_cents) VALUES (?, ?)")
        .bind(order.order_id)
        .bind(order.amount_cents)
        .execute(&app.db)
        .await?;
    Ok(Json(InvoiceCreated {
        order_id: order.order_id,
        total_cents: order.amount_cents,
    }))
}

async fn send_invoice(
    State(app): State<App>,
    Json(invoice): Json<InvoiceCreated>,
) -> Result<(), HandlerError> {
    app.invoices.fetch_add(1, Ordering::SeqCst);
    println!(
        "invoice:     order {} over {} cents",
        invoice.order_id, invoice.total_cents
    );
    Ok(())
}

async fn inspect_dead_letter(State(app): State<App>, msg: Message) -> Result<(), HandlerError> {
    app.dead_letters.fetch_add(1, Ordering::SeqCst);
    println!(
        "dead letter: {}, {} attempts; reason: {}",
        String::from_utf8_lossy(msg.payload()),
        msg.header(headers::ATTEMPTS).unwrap_or("?"),
        msg.header(headers::DEAD_LETTER_REASON).unwrap_or("?"),
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let file = std::env::temp_dir().join("msg-billing-example.db");
    let db = SqlitePool::connect(&format!("sqlite://{}?mode=rwc", file.display()))
        .await
        .with_context(|| format!("could not open {}", file.display()))?;
    sqlx::query("DROP TABLE IF EXISTS billed")
        .execute(&db)
        .await?;
    sqlx::query(
        "CREATE TABLE billed (order_id INTEGER PRIMARY KEY, amount_cents INTEGER NOT NULL CHECK (amount_cents > 0))",
    )
    .execute(&db)
    .await?;

    let conn = msg::connect("memory://billing").await?;
    let app = App {
        db: db.clone(),
        invoices: Arc::default(),
        dead_letters: Arc::default(),
    };
    let router = Router::new(conn.clone(), conn.clone())
        .with_state(app.clone())
        .handle_with(
            Subscription::new("orders.placed").group("billing"),
            HandlerOptions::default().publish_to("invoices.created"),
            bill,
        )
        .handle(
            Subscription::new("invoices.created").group("mailer"),
            send_invoice,
        )
        .handle(
            Subscription::new("orders.placed.dlq").group("ops"),
            inspect_dead_letter,
        )
        // Three calls in all, 10 ms apart and doubling, then a dead letter.
        .layer(
            RetryLayer::in_process()
                .max_attempts(3)
                .min_delay(Duration::from_millis(10)),
        )
        .start()
        .await?;

    for (order_id, amount_cents) in [(1, 2_500), (2, 0), (3, 990)] {
        conn.publish_json(
            "orders.placed",
            &OrderPlaced {
                order_id,
                amount_cents,
            },
        )
        .await?;
    }

    let done = tokio::time::timeout(Duration::from_secs(10), async {
        while app.invoices.load(Ordering::SeqCst) < 2 || app.dead_letters.load(Ordering::SeqCst) < 1
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    router.shutdown().await;
    done.context("the orders were not all handled within 10 s")?;

    let billed: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM billed")
        .fetch_one(&db)
        .await?;
    ensure!(
        billed == 2,
        "expected 2 billed orders in SQLite, found {billed}"
    );
    println!(
        "done:        {billed} orders billed in {}, {} invoices sent, {} order dead-lettered",
        file.display(),
        app.invoices.load(Ordering::SeqCst),
        app.dead_letters.load(Ordering::SeqCst),
    );
    Ok(())
}
