//! How a pass publishes its rows: the rows of a key one at a time, in
//! order; rows without a key that need no publish options together, a
//! batch per topic (one `publish_batch`, which most transports send in one
//! round trip).

use std::collections::HashMap;

use msg_core::{Error, Publisher};

use super::Relay;
use crate::row::{ClaimedRow, now_millis};
use crate::store::{Failure, Outcome};

/// Most rows in one `publish_batch`.
pub(super) const BATCH_MAX: usize = 100;

/// A claimed batch, arranged for publishing.
#[derive(Debug)]
pub(super) struct Plan {
    /// Rows published one after another: one run per key, in order, and
    /// a run of one for each row without a key that has options.
    pub(super) runs: Vec<Vec<ClaimedRow>>,
    /// Rows without a key and without options, by topic, at most `limit`
    /// a batch.
    pub(super) batches: Vec<(String, Vec<ClaimedRow>)>,
}

impl Plan {
    pub(super) fn of(rows: Vec<ClaimedRow>, limit: usize) -> Self {
        let limit = limit.max(1);
        let mut runs: Vec<Vec<ClaimedRow>> = Vec::new();
        let mut by_key: HashMap<String, usize> = HashMap::new();
        let mut batches: Vec<(String, Vec<ClaimedRow>)> = Vec::new();
        // The batch of each topic still filling.
        let mut filling: HashMap<String, usize> = HashMap::new();
        for row in rows {
            match &row.key {
                Some(key) => match by_key.get(key) {
                    Some(&run) => runs[run].push(row),
                    None => {
                        by_key.insert(key.clone(), runs.len());
                        runs.push(vec![row]);
                    }
                },
                None if without_options(&row) => match filling.get(&row.topic) {
                    Some(&batch) if batches[batch].1.len() < limit => batches[batch].1.push(row),
                    _ => {
                        filling.insert(row.topic.clone(), batches.len());
                        batches.push((row.topic.clone(), vec![row]));
                    }
                },
                None => runs.push(vec![row]),
            }
        }
        Self { runs, batches }
    }
}

/// `publish_batch` takes messages without options.
fn without_options(row: &ClaimedRow) -> bool {
    row.deliver_at.is_none() && row.ttl_ms.is_none() && row.reply_to.is_none()
}

impl<P: Publisher> Relay<P> {
    /// Publishes one key's rows in order, stopping at the first failure.
    pub(super) async fn publish_in_order(&self, rows: Vec<ClaimedRow>) -> Outcome {
        let mut outcome = Outcome::default();
        let mut rows = rows.into_iter();
        while let Some(row) = rows.next() {
            // Never closed, so a permit always comes.
            let _permit = self.in_flight.acquire().await;
            let published = match row.message() {
                Ok((message, options)) => self
                    .publisher
                    .publish_with(&row.topic, message, options)
                    .await
                    .map(drop),
                Err(e) => Err(e),
            };
            match published {
                Ok(()) => self.sent(&row, &mut outcome),
                Err(error) => {
                    outcome.failed.push(self.failure(&row, &error));
                    // Later rows of the key wait for this one.
                    outcome.released.extend(rows.map(|r| r.seq));
                    break;
                }
            }
        }
        outcome
    }

    /// Publishes rows of `topic` that have no key in one batch. A batch's
    /// error is one for all the rows the broker did not take: when it is
    /// retryable (the broker away, a timeout), they are all tried again
    /// later; when it is not, it may be one row's alone (its size, say),
    /// so they are published one by one, each retried or given up on for
    /// its own error.
    pub(super) async fn publish_together(&self, topic: String, rows: Vec<ClaimedRow>) -> Outcome {
        let mut outcome = Outcome::default();
        let mut ready = Vec::with_capacity(rows.len());
        let mut messages = Vec::with_capacity(rows.len());
        for row in rows {
            match row.message() {
                Ok((message, _)) => {
                    messages.push(message);
                    ready.push(row);
                }
                Err(error) => outcome.failed.push(self.failure(&row, &error)),
            }
        }
        if messages.is_empty() {
            return outcome;
        }
        let refused: Vec<ClaimedRow> = {
            // A batch counts as many publishes as it has messages; it is
            // never larger than the relay's concurrency, so its permits
            // always come.
            let permits = u32::try_from(messages.len()).unwrap_or(u32::MAX);
            let _permits = self.in_flight.acquire_many(permits).await;
            match self.publisher.publish_batch(&topic, messages).await {
                Ok(_) => {
                    for row in &ready {
                        self.sent(row, &mut outcome);
                    }
                    return outcome;
                }
                Err(batch) => {
                    let mut refused = Vec::new();
                    for (i, row) in ready.into_iter().enumerate() {
                        if batch.is_accepted(i) {
                            self.sent(&row, &mut outcome);
                        } else if batch.error().is_retryable() {
                            outcome.failed.push(self.failure(&row, batch.error()));
                        } else {
                            refused.push(row);
                        }
                    }
                    refused
                }
            }
        };
        for row in refused {
            let one = self.publish_in_order(vec![row]).await;
            outcome.sent.extend(one.sent);
            outcome.failed.extend(one.failed);
        }
        outcome
    }

    #[cfg_attr(not(feature = "metrics"), allow(clippy::unused_self))]
    fn sent(&self, row: &ClaimedRow, outcome: &mut Outcome) {
        #[cfg(feature = "metrics")]
        if let Some(metrics) = &self.metrics {
            let lag = (now_millis() - row.enqueued_at).max(0);
            metrics.lag.observe(lag as f64 / 1_000.0);
        }
        outcome.sent.push(row.seq);
    }

    pub(super) fn failure(&self, row: &ClaimedRow, error: &Error) -> Failure {
        let attempts = row.attempts + 1;
        let gave_up = !error.is_retryable() || attempts >= i64::from(self.max_attempts);
        let backoff = self
            .min_backoff
            .saturating_mul(2u32.saturating_pow(u32::try_from(attempts - 1).unwrap_or(u32::MAX)))
            .min(self.max_backoff);
        let chain = error.chain();
        if gave_up {
            tracing::warn!(id = %row.id, topic = %row.topic, attempts, error = %chain, "outbox row failed: kept in the failed state");
        } else {
            tracing::debug!(id = %row.id, topic = %row.topic, attempts, ?backoff, error = %chain, "publishing an outbox row failed; trying again later");
        }
        Failure {
            seq: row.seq,
            attempts,
            next_attempt_at: now_millis()
                .saturating_add(i64::try_from(backoff.as_millis()).unwrap_or(i64::MAX)),
            gave_up,
            error: chain,
        }
    }
}

#[cfg(test)]
mod tests {
    use msg_core::Uuid;

    use super::*;

    fn row(seq: i64, key: Option<&str>, topic: &str) -> ClaimedRow {
        ClaimedRow {
            seq,
            id: Uuid::now_v7().to_string(),
            topic: topic.into(),
            key: key.map(Into::into),
            headers: "[]".into(),
            payload: msg_core::Bytes::new(),
            deliver_at: None,
            ttl_ms: None,
            reply_to: None,
            attempts: 0,
            enqueued_at: 0,
        }
    }

    fn seqs(rows: &[ClaimedRow]) -> Vec<i64> {
        rows.iter().map(|r| r.seq).collect()
    }

    #[test]
    fn keys_run_in_order_and_rows_without_one_go_in_batches_by_topic() {
        let mut delayed = row(8, None, "t");
        delayed.deliver_at = Some(1);
        let plan = Plan::of(
            vec![
                row(1, Some("a"), "t"),
                row(2, None, "t"),
                row(3, Some("b"), "t"),
                row(4, Some("a"), "t"),
                row(5, None, "u"),
                row(6, None, "t"),
                row(7, None, "t"),
                delayed,
                row(9, Some("b"), "t"),
            ],
            2,
        );
        let runs: Vec<Vec<i64>> = plan.runs.iter().map(|r| seqs(r)).collect();
        assert_eq!(runs, [vec![1, 4], vec![3, 9], vec![8]]);
        let batches: Vec<(&str, Vec<i64>)> = plan
            .batches
            .iter()
            .map(|(t, rows)| (t.as_str(), seqs(rows)))
            .collect();
        assert_eq!(batches, [("t", vec![2, 6]), ("u", vec![5]), ("t", vec![7])]);
    }
}
