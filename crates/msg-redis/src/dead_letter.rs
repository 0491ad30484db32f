//! Reading the dead-letter streams: `XRANGE` from an entry id, `XDEL` by
//! entry id. A dead letter's position is its entry id. Reading consumes
//! nothing: consumer groups of the stream are not touched.

use fred::prelude::StreamsInterface;
use fred::types::Value;
use msg_core::Result;
use msg_core::dead_letter::{DeadLetter, DeadLetterCapabilities, DeadLetterReader};

use crate::RedisBroker;
use crate::entry::{decode, parse_entries};

impl DeadLetterReader for RedisBroker {
    async fn read(
        &self,
        topic: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        // "(" makes the start exclusive (Redis 6.2).
        let start = after.map_or_else(|| "-".to_owned(), |id| format!("({id}"));
        let reply: Value = self
            .shared
            .client
            .xrange(topic, start.as_str(), "+", Some(limit as u64))
            .await
            .map_err(|e| self.shared.fail(e))?;
        Ok(parse_entries(reply)
            .into_iter()
            .map(|entry| {
                let message = decode(topic, &entry);
                DeadLetter::new(entry.id, message)
            })
            .collect())
    }

    async fn delete(&self, topic: &str, positions: &[String]) -> Result<u64> {
        if positions.is_empty() {
            return Ok(0);
        }
        let removed: u64 = self
            .shared
            .client
            .xdel(topic, positions.to_vec())
            .await
            .map_err(|e| self.shared.fail(e))?;
        Ok(removed)
    }

    fn dead_letter_capabilities(&self) -> DeadLetterCapabilities {
        DeadLetterCapabilities::full()
    }
}
