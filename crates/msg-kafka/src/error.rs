//! rdkafka's errors mapped into `msg_core::Error`.

use msg_core::Error;
use msg_core::raw::url::is_secret;
use rdkafka::error::{KafkaError, RDKafkaErrorCode as Code};

/// Whether trying again can help: the broker or the network being away,
/// leadership moving, timeouts. Refusals of the request itself (too large,
/// not allowed, invalid) are permanent.
fn retryable(code: Code) -> bool {
    !matches!(
        code,
        Code::InvalidArgument
            | Code::Authentication
            | Code::UnsupportedFeature
            | Code::Fatal
            | Code::InvalidMessage
            | Code::InvalidMessageSize
            | Code::MessageSizeTooLarge
            | Code::MessageBatchTooLarge
            | Code::InvalidTopic
            | Code::InvalidRequiredAcks
            | Code::InvalidGroupId
            | Code::TopicAuthorizationFailed
            | Code::GroupAuthorizationFailed
            | Code::ClusterAuthorizationFailed
            | Code::UnsupportedSASLMechanism
            | Code::UnsupportedVersion
            | Code::InvalidPartitions
            | Code::InvalidReplicationFactor
            | Code::InvalidConfig
            | Code::PolicyViolation
            | Code::InvalidRequest
            | Code::SaslAuthenticationFailed
            | Code::UnsupportedCompressionType
            | Code::InvalidRecord
    )
}

/// Any error of the client, by its code.
pub(crate) fn kafka(e: KafkaError) -> Error {
    let code = match &e {
        KafkaError::AdminOp(code) => Some(*code),
        other => other.rdkafka_error_code(),
    };
    match code {
        Some(Code::QueueFull) => Error::Backpressure,
        Some(
            Code::BrokerTransportFailure
            | Code::AllBrokersDown
            | Code::Resolve
            | Code::MessageTimedOut
            | Code::OperationTimedOut
            | Code::RequestTimedOut,
        ) => Error::Connection(Box::new(e)),
        Some(code) if retryable(code) => Error::broker_retryable(e),
        Some(_) => Error::broker_permanent(e),
        // Configuration and client creation: the caller's to fix.
        None => match e {
            // librdkafka's text names the value: never keep it for a
            // secret property, not even as the error's source.
            KafkaError::ClientConfig(_, desc, key, value) => {
                let (desc, value) = if is_secret(&key) {
                    let desc = if value.is_empty() {
                        desc
                    } else {
                        desc.replace(&value, "***")
                    };
                    (desc, "***".to_owned())
                } else {
                    (desc, value)
                };
                Error::invalid_config(format!(
                    "librdkafka refused the configuration property `{key}` = `{value}`: {desc}"
                ))
            }
            KafkaError::ClientCreation(_) => {
                Error::invalid_config_with("librdkafka refused the configuration", e)
            }
            other => Error::broker_retryable(other),
        },
    }
}

/// The producer's librdkafka context: logs librdkafka's errors as rdkafka's
/// default context does, and keeps the last refusal (a TLS handshake or a
/// login the broker refused), so that a connect that fails can say why:
/// librdkafka reports them here, while the metadata request only times
/// out.
///
/// Clones share what they keep: a clone kept before the producer takes its
/// context reads it (rdkafka gives no way back to the context).
#[derive(Debug, Default, Clone)]
pub struct ErrorContext {
    refusal: std::sync::Arc<std::sync::Mutex<Option<(Code, String)>>>,
}

impl rdkafka::ClientContext for ErrorContext {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::error!("librdkafka: {error}: {reason}");
        // Only refusals: "all brokers down", which follows each, would
        // hide them.
        if let Some(code @ (Code::SSL | Code::Authentication)) = error.rdkafka_error_code() {
            *self
                .refusal
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some((code, reason.to_owned()));
        }
    }
}

impl ErrorContext {
    /// Whether librdkafka reported a refusal.
    pub(crate) fn refused(&self) -> bool {
        self.refusal().is_some()
    }

    fn refusal(&self) -> Option<(Code, String)> {
        self.refusal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// A connect's failure `e`, with what librdkafka reported meanwhile: a TLS
/// handshake or a login the broker refused is the configuration's to fix,
/// which connecting again will not; anything else is as [`kafka`] says.
pub(crate) fn connect(e: KafkaError, context: &ErrorContext) -> Error {
    match context.refusal() {
        Some((Code::SSL, reason)) => Error::invalid_config_with(
            format!("the TLS handshake with the Kafka broker failed: {reason}"),
            e,
        ),
        Some((_, reason)) => Error::invalid_config_with(
            format!("the Kafka broker refused the credentials: {reason}"),
            e,
        ),
        None => kafka(e),
    }
}

/// A publish of `size` bytes under the configured limit `max`
/// (`message.max.bytes`): a record over the limit is the caller's problem.
pub(crate) fn publish(e: KafkaError, size: usize, max: usize) -> Error {
    match e.rdkafka_error_code() {
        Some(Code::MessageSizeTooLarge | Code::InvalidMessageSize) => {
            Error::MessageTooLarge { size, max }
        }
        _ => kafka(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_librdkafka_reported_makes_a_failed_connect_a_configuration_error() {
        use rdkafka::ClientContext;
        let timed_out = || KafkaError::MetadataFetch(Code::BrokerTransportFailure);
        let context = ErrorContext::default();
        assert!(matches!(
            connect(timed_out(), &context),
            Error::Connection(_)
        ));
        context.error(
            KafkaError::Global(Code::SSL),
            "ssl://h:1/bootstrap: SSL handshake failed: certificate verify failed",
        );
        // What follows each refusal must not hide it.
        context.error(
            KafkaError::Global(Code::AllBrokersDown),
            "1/1 brokers are down",
        );
        let e = connect(timed_out(), &context);
        assert!(matches!(e, Error::InvalidConfig { .. }), "{e:?}");
        assert!(e.to_string().contains("certificate verify failed"), "{e}");
        assert!(!e.is_retryable());

        let context = ErrorContext::default();
        context.error(
            KafkaError::Global(Code::Authentication),
            "SASL authentication error: Authentication failed",
        );
        let e = connect(timed_out(), &context);
        assert!(e.to_string().contains("refused the credentials"), "{e}");
    }

    #[test]
    fn classification() {
        let e = kafka(KafkaError::MessageProduction(Code::AllBrokersDown));
        assert!(e.is_connection() && e.is_retryable());
        assert!(matches!(
            kafka(KafkaError::MessageProduction(Code::QueueFull)),
            Error::Backpressure
        ));
        assert!(kafka(KafkaError::MessageProduction(Code::NotLeaderForPartition)).is_retryable());
        assert!(
            !kafka(KafkaError::MessageProduction(
                Code::TopicAuthorizationFailed
            ))
            .is_retryable()
        );
        assert!(matches!(
            publish(
                KafkaError::MessageProduction(Code::MessageSizeTooLarge),
                9,
                5
            ),
            Error::MessageTooLarge { size: 9, max: 5 }
        ));
        assert!(matches!(
            kafka(KafkaError::ClientCreation("bad".into())),
            Error::InvalidConfig { .. }
        ));
    }

    #[test]
    fn a_refused_secret_is_not_in_the_error() {
        use rdkafka::types::RDKafkaConfRes;
        let refused = KafkaError::ClientConfig(
            RDKafkaConfRes::RD_KAFKA_CONF_INVALID,
            "Invalid value \"s3cret\" for configuration property \"ssl.key.password\"".into(),
            "ssl.key.password".into(),
            "s3cret".into(),
        );
        let e = kafka(refused);
        let shown = format!("{e} {e:?} {}", e.chain());
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("ssl.key.password"), "{shown}");
        // Values of other properties help and are shown.
        let e = kafka(KafkaError::ClientConfig(
            RDKafkaConfRes::RD_KAFKA_CONF_INVALID,
            "Invalid value".into(),
            "acks".into(),
            "maybe".into(),
        ));
        assert!(e.to_string().contains("maybe"), "{e}");
    }

    /// A secret property this build of librdkafka refuses: without the
    /// `ssl` feature it refuses SSL settings; with it (and no libcurl),
    /// OpenID Connect's.
    #[cfg(not(feature = "ssl"))]
    const SECRET_REFUSED: &str = "ssl.key.password";
    #[cfg(feature = "ssl")]
    const SECRET_REFUSED: &str = "sasl.oauthbearer.client.secret";

    #[test]
    fn librdkafkas_own_refusal_of_a_secret_is_redacted() {
        // librdkafka's error names the refused value.
        let refused = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:1")
            .set(SECRET_REFUSED, "s3cret")
            .create::<rdkafka::producer::BaseProducer>();
        let Err(e) = refused else {
            panic!("librdkafka took {SECRET_REFUSED}: this test needs another secret it refuses");
        };
        assert!(
            format!("{e}").contains("s3cret"),
            "librdkafka no longer echoes it: {e}"
        );
        let e = kafka(e);
        let shown = format!("{e} {e:?} {}", e.chain());
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
