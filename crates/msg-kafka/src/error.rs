//! rdkafka's errors mapped into `msg_core::Error`.

use msg_core::Error;
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
            KafkaError::ClientConfig(..) | KafkaError::ClientCreation(_) => {
                Error::invalid_config_with("librdkafka refused the configuration", e)
            }
            other => Error::broker_retryable(other),
        },
    }
}

/// A publish: a record over the broker's limit is the caller's problem.
pub(crate) fn publish(e: KafkaError, size: usize) -> Error {
    match e.rdkafka_error_code() {
        Some(Code::MessageSizeTooLarge | Code::InvalidMessageSize) => Error::MessageTooLarge {
            size,
            max: crate::DEFAULT_MAX_MESSAGE_SIZE,
        },
        _ => kafka(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            publish(KafkaError::MessageProduction(Code::MessageSizeTooLarge), 9),
            Error::MessageTooLarge { size: 9, .. }
        ));
        assert!(matches!(
            kafka(KafkaError::ClientCreation("bad".into())),
            Error::InvalidConfig { .. }
        ));
    }
}
