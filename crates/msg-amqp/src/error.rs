//! lapin's errors mapped into `msg_core::Error`.

use lapin::ErrorKind;
use msg_core::Error;

/// The connection breaking is retryable; the broker refusing an operation
/// (a soft channel error such as a queue declared with other arguments) is
/// not; refused credentials are a configuration error.
pub(crate) fn map(e: lapin::Error) -> Error {
    match e.kind() {
        ErrorKind::ProtocolError(amqp) => {
            let text = amqp.to_string();
            if text.contains("ACCESS_REFUSED") || text.contains("NOT_ALLOWED") {
                Error::invalid_config(format!("the AMQP broker refused: {text}"))
            } else if e.is_amqp_soft_error() {
                Error::broker_permanent(e)
            } else {
                Error::Connection(Box::new(e))
            }
        }
        ErrorKind::AuthProviderError(_) | ErrorKind::InvalidProtocolVersion(_) => {
            Error::invalid_config_with("the broker refused the connection settings", e)
        }
        ErrorKind::ChannelsLimitReached => Error::broker_retryable(e),
        _ => Error::Connection(Box::new(e)),
    }
}
