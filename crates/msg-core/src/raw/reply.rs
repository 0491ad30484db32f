//! Reply inboxes: the topics a transport makes for one requester's replies.

/// The first segment of every reply topic the default
/// [`Subscriber::reply_inbox`](crate::Subscriber::reply_inbox) makes.
///
/// Transports recognise reply topics by it: a reply to a requester that
/// has gone must not bring its topic back.
pub const REPLY_TOPIC_PREFIX: &str = "msg-reply.";

/// A new reply topic: [`REPLY_TOPIC_PREFIX`] and a random UUID.
pub fn new_reply_topic() -> String {
    format!("{REPLY_TOPIC_PREFIX}{}", uuid::Uuid::new_v4().simple())
}

/// Whether `topic` is a reply topic made by [`new_reply_topic`].
pub fn is_reply_topic(topic: &str) -> bool {
    topic.starts_with(REPLY_TOPIC_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_topics_are_valid_unique_and_recognised() {
        let (a, b) = (new_reply_topic(), new_reply_topic());
        crate::raw::topic::validate_topic(&a).unwrap();
        assert_ne!(a, b);
        assert!(is_reply_topic(&a));
        assert!(!is_reply_topic("orders"));
    }
}
