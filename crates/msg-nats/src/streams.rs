//! Which JetStream stream holds a topic: found, or created on demand.

use async_nats::jetstream::context::GetStreamByNameErrorKind;
use async_nats::jetstream::stream;
use msg_core::{Error, Result};

use crate::config::{Retention, Storage};
use crate::{Shared, error};

/// The subjects of `stream` that hold its pending message schedules (the
/// publish option `deliver_at`): outside every topic, so that no
/// subscription sees a schedule before it fires.
pub(crate) fn schedule_prefix(stream: &str) -> String {
    format!("_msg_schedule.{stream}")
}

impl Shared {
    /// The name of the stream that holds `subject` (a topic or a pattern).
    ///
    /// With a bound stream, that one (created with its subjects if it does
    /// not exist). Otherwise the stream the server says holds the subject,
    /// or, when none does, a new stream named after the first segment that
    /// holds the segment and everything below it.
    pub(crate) async fn stream_for(&self, subject: &str) -> Result<String> {
        if let Some(name) = self.streams.lock().expect("streams lock").get(subject) {
            return Ok(name.clone());
        }
        let root = subject.split('.').next().unwrap_or(subject);
        if self.config.streams.bind.is_none() && (root == "*" || root == ">") {
            return Err(Error::invalid_config(format!(
                "the pattern {subject:?} starts with a wildcard, so it names no stream: \
                 bind the stream that holds it with StreamSettings::bind"
            )));
        }
        let name = match &self.config.streams.bind {
            Some((name, subjects)) => {
                self.create_stream(name, subjects.clone()).await?;
                name.clone()
            }
            None => match self.jetstream.stream_by_subject(subject).await {
                Ok(name) => name,
                Err(e) if e.kind() == GetStreamByNameErrorKind::NotFound => {
                    let subjects = vec![
                        root.to_owned(),
                        format!("{root}.>"),
                        format!("{}.>", schedule_prefix(root)),
                    ];
                    self.create_stream(root, subjects).await?;
                    root.to_owned()
                }
                Err(e) => return Err(error::request(e)),
            },
        };
        self.streams
            .lock()
            .expect("streams lock")
            .insert(subject.to_owned(), name.clone());
        Ok(name)
    }

    /// Creates the stream unless it exists; an existing stream is used as
    /// it is, whatever its settings.
    async fn create_stream(&self, name: &str, subjects: Vec<String>) -> Result<()> {
        let settings = &self.config.streams;
        let config = stream::Config {
            name: name.to_owned(),
            subjects,
            storage: match settings.storage {
                Storage::File => stream::StorageType::File,
                Storage::Memory => stream::StorageType::Memory,
            },
            retention: match settings.retention {
                Retention::Limits => stream::RetentionPolicy::Limits,
                Retention::Interest => stream::RetentionPolicy::Interest,
            },
            max_age: settings.max_age.unwrap_or_default(),
            duplicate_window: settings.duplicate_window,
            num_replicas: settings.replicas,
            // For the publish options ttl (server 2.11 and later) and
            // deliver_at (2.12): older servers do not know the settings.
            allow_message_ttl: self.server_at_least(2, 11),
            allow_message_schedules: self.server_at_least(2, 12),
            ..Default::default()
        };
        match self.jetstream.get_or_create_stream(config).await {
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!(stream = name, error = %e, "creating a JetStream stream failed");
                Err(error::create_stream(e))
            }
        }
    }
}
