//! Reading the dead-letter topics: from what the broker retains.
//!
//! A dead letter's position is its offset on the dead-letter topic. Only
//! retained messages can be read, so a broker with no
//! [`retention`](crate::MemoryConfig::retention) reads none (its
//! capabilities say so); removing one removes it from what is retained
//! (a subscriber that already holds it keeps it).

use msg_core::dead_letter::{DeadLetter, DeadLetterCapabilities, DeadLetterReader};
use msg_core::{Error, Result};

use crate::MemoryBroker;

impl DeadLetterReader for MemoryBroker {
    async fn read(
        &self,
        topic: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        let after = after.map(offset).transpose()?;
        Ok(self
            .shared
            .retained_after(topic, after, limit)
            .into_iter()
            .map(|(offset, message)| DeadLetter::new(offset.to_string(), message))
            .collect())
    }

    async fn delete(&self, topic: &str, positions: &[String]) -> Result<u64> {
        let offsets = positions
            .iter()
            .map(|p| offset(p))
            .collect::<Result<Vec<u64>>>()?;
        Ok(self.shared.remove_retained(topic, &offsets))
    }

    fn dead_letter_capabilities(&self) -> DeadLetterCapabilities {
        if self.shared.config.retention > 0 {
            DeadLetterCapabilities::full()
        } else {
            DeadLetterCapabilities::default()
        }
    }
}

fn offset(position: &str) -> Result<u64> {
    position.parse().map_err(|_| {
        Error::invalid_config(format!(
            "{position:?} is not a position of the in-process broker (an offset)"
        ))
    })
}
