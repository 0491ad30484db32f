//! Reading the dead-letter subjects, in JetStream mode: a dead letter is
//! a message of its stream, read by sequence number with the stream's
//! message-get API (`next_by_subject`), one request per dead letter, and
//! deleted by sequence number. Reading consumes nothing and makes no
//! consumer. Core NATS stores nothing, so there is nothing to read.

use async_nats::jetstream::context::GetStreamByNameErrorKind;
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use msg_core::dead_letter::{DeadLetter, DeadLetterCapabilities, DeadLetterReader};
use msg_core::raw::stable_id;
use msg_core::raw::topic::validate_topic;
use msg_core::{Error, Result};

use crate::config::Mode;
use crate::subscriber::decode_parts;
use crate::{NatsBroker, error};

impl NatsBroker {
    /// The name of the stream holding `topic` and the stream, if one does;
    /// reading makes none.
    async fn stream_holding(
        &self,
        topic: &str,
    ) -> Result<Option<(String, async_nats::jetstream::stream::Stream<()>)>> {
        if self.shared.config.mode != Mode::JetStream {
            return Err(Error::Unsupported {
                operation: "reading dead letters (core NATS stores none)",
                transport: "nats",
            });
        }
        validate_topic(topic)?;
        let jetstream = &self.shared.jetstream;
        let name = match jetstream.stream_by_subject(topic).await {
            Ok(name) => name,
            Err(e) if e.kind() == GetStreamByNameErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(error::request(e)),
        };
        let stream = jetstream
            .get_stream_no_info(&name)
            .await
            .map_err(error::request)?;
        Ok(Some((name, stream)))
    }
}

fn sequence(position: &str) -> Result<u64> {
    position.parse().map_err(|_| {
        Error::invalid_config(format!(
            "{position:?} is not a position of a NATS dead letter (a stream sequence number)"
        ))
    })
}

impl DeadLetterReader for NatsBroker {
    async fn read(
        &self,
        topic: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        let Some((name, stream)) = self.stream_holding(topic).await? else {
            return Ok(Vec::new());
        };
        let mut next = after.map(sequence).transpose()?.map_or(1, |s| s + 1);
        let mut letters = Vec::new();
        while letters.len() < limit {
            let got = stream
                .raw_message_builder()
                .sequence(next)
                .next_by_subject(topic)
                .send()
                .await;
            let raw = match got {
                Ok(raw) => raw,
                Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => break,
                Err(e) => return Err(error::request(e)),
            };
            next = raw.sequence + 1;
            let message = decode_parts(Some(&raw.headers), &raw.payload, || {
                stable_id(format!("nats/{name}/{}", raw.sequence))
            });
            letters.push(DeadLetter::new(raw.sequence.to_string(), message));
        }
        Ok(letters)
    }

    async fn delete(&self, topic: &str, positions: &[String]) -> Result<u64> {
        let Some((_, stream)) = self.stream_holding(topic).await? else {
            return Ok(0);
        };
        let mut removed = 0;
        for position in positions {
            // A sequence already gone is an error reply: nothing removed.
            if let Ok(true) = stream.delete_message(sequence(position)?).await {
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn dead_letter_capabilities(&self) -> DeadLetterCapabilities {
        match self.shared.config.mode {
            Mode::JetStream => DeadLetterCapabilities::full(),
            Mode::Core => DeadLetterCapabilities::default(),
        }
    }
}
