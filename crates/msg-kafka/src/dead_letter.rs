//! Reading the dead-letter topics: a consumer of its own that assigns
//! each partition and reads it from its start, committing nothing and
//! joining no group. Dead letters come partition by partition, in offset
//! order; a position is `<partition>:<offset>`.
//!
//! Kafka removes records only as a prefix of a partition (and only where
//! the retention allows), never chosen ones: the reader cannot delete, so
//! purge is `Unsupported` and a replay keeps what it replayed. Each read
//! starts at the beginning of the partition and skips to the position
//! asked for: tansu cannot fetch from the middle of a stored batch.

use std::time::{Duration, Instant};

use msg_core::dead_letter::{DeadLetter, DeadLetterCapabilities, DeadLetterReader};
use msg_core::raw::topic::validate_topic;
use msg_core::{Error, Result, Uuid};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message as _, Offset, TopicPartitionList};

use crate::subscriber::decode;
use crate::{KafkaBroker, error};

/// How long one read waits for records it knows are there.
const READ_WAIT: Duration = Duration::from_secs(30);

fn position(text: &str) -> Result<(i32, i64)> {
    text.split_once(':')
        .and_then(|(p, o)| Some((p.parse().ok()?, o.parse().ok()?)))
        .ok_or_else(|| {
            Error::invalid_config(format!(
                "{text:?} is not a position of a Kafka dead letter (partition:offset)"
            ))
        })
}

impl DeadLetterReader for KafkaBroker {
    async fn read(
        &self,
        topic: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        validate_topic(topic)?;
        let after = after.map(position).transpose()?;
        let config = self.shared.config.consumer(
            &format!("msg-dead-letters-{}", Uuid::new_v4().simple()),
            true,
        );
        let topic = topic.to_owned();
        let timeout = self.shared.config.connect_timeout;
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = config.create().map_err(error::kafka)?;
            let metadata = consumer
                .fetch_metadata(Some(&topic), timeout)
                .map_err(error::kafka)?;
            let mut partitions: Vec<i32> = metadata
                .topics()
                .iter()
                .filter(|t| t.name() == topic && t.error().is_none())
                .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                .collect();
            partitions.sort_unstable();
            let mut letters = Vec::new();
            for partition in partitions {
                let skip_to = match after {
                    Some((p, _)) if partition < p => continue,
                    Some((p, o)) if partition == p => o + 1,
                    _ => 0,
                };
                let (low, high) = consumer
                    .fetch_watermarks(&topic, partition, timeout)
                    .map_err(error::kafka)?;
                if skip_to.max(low) >= high {
                    continue;
                }
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition_offset(&topic, partition, Offset::Offset(low))
                    .map_err(error::kafka)?;
                consumer.assign(&tpl).map_err(error::kafka)?;
                let deadline = Instant::now() + READ_WAIT;
                loop {
                    let Some(record) = consumer.poll(Duration::from_millis(200)) else {
                        if Instant::now() > deadline {
                            return Err(Error::timeout_on(topic.clone(), READ_WAIT));
                        }
                        continue;
                    };
                    let record = record.map_err(error::kafka)?;
                    let offset = record.offset();
                    if offset >= skip_to {
                        letters.push(DeadLetter::new(
                            format!("{partition}:{offset}"),
                            decode(&record),
                        ));
                        if letters.len() == limit {
                            return Ok(letters);
                        }
                    }
                    if offset + 1 >= high {
                        break;
                    }
                }
            }
            Ok(letters)
        })
        .await
        .map_err(|e| Error::Connection(Box::new(e)))?
    }

    async fn delete(&self, _topic: &str, _positions: &[String]) -> Result<u64> {
        Err(Error::Unsupported {
            operation: "deleting chosen records",
            transport: "kafka",
        })
    }

    fn dead_letter_capabilities(&self) -> DeadLetterCapabilities {
        DeadLetterCapabilities::read_only()
    }
}
