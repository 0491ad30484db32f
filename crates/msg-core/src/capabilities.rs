//! What a transport guarantees.

use crate::event::CloudEventsBinding;

/// Which messages keep their relative order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageOrder {
    /// No order is guaranteed.
    None,
    /// Messages with the same key arrive in publish order.
    PerKey,
    /// All messages of one topic arrive in publish order.
    PerTopic,
}

/// What a transport guarantees; the router and the conformance suite read it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// The transport's name, as errors name it (`memory`, `redis`, `kafka`,
    /// `amqp`, `nats-core`, `nats-jetstream`).
    pub transport: &'static str,
    /// Messages survive a broker restart and wait for absent consumers.
    pub persistent: bool,
    /// Messages are delivered at least once (redelivered until settled).
    /// When false, delivery is at most once and settling is a no-op.
    pub at_least_once: bool,
    /// Consumer groups: members of one group compete for messages.
    pub consumer_groups: bool,
    /// Which messages keep their order.
    pub ordering: MessageOrder,
    /// A subscriber that starts at the earliest position receives messages
    /// published before it subscribed.
    pub replay: bool,
    /// The broker dead-letters messages itself.
    pub native_dead_letter: bool,
    /// The broker delays a `retry_after` itself.
    pub native_retry_after: bool,
    /// The publish option `deliver_at` (and `delay`) is honoured.
    pub native_deliver_at: bool,
    /// The publish option `ttl` is honoured: the broker drops a message not
    /// delivered in time.
    pub native_ttl: bool,
    /// The publish option `reply_to` is carried to consumers.
    pub native_reply_to: bool,
    /// The broker drops duplicate publishes of one message id.
    pub native_dedup: bool,
    /// Subscriptions accept topic patterns with wildcards.
    pub wildcards: bool,
    /// The largest payload the transport accepts, if it has a limit.
    pub max_message_size: Option<usize>,
    /// How CloudEvents attributes are named in headers.
    pub cloudevents: CloudEventsBinding,
}

impl Capabilities {
    /// The weakest guarantees: nothing persistent, at most once, no order.
    /// Transports start from here and say what they add.
    pub const fn minimal(transport: &'static str) -> Self {
        Self {
            transport,
            persistent: false,
            at_least_once: false,
            consumer_groups: false,
            ordering: MessageOrder::None,
            replay: false,
            native_dead_letter: false,
            native_retry_after: false,
            native_deliver_at: false,
            native_ttl: false,
            native_reply_to: false,
            native_dedup: false,
            wildcards: false,
            max_message_size: None,
            cloudevents: CloudEventsBinding::Http,
        }
    }

    /// Sets [`transport`](Self::transport).
    pub const fn with_transport(mut self, v: &'static str) -> Self {
        self.transport = v;
        self
    }
    /// Sets [`persistent`](Self::persistent).
    pub const fn with_persistent(mut self, v: bool) -> Self {
        self.persistent = v;
        self
    }
    /// Sets [`at_least_once`](Self::at_least_once).
    pub const fn with_at_least_once(mut self, v: bool) -> Self {
        self.at_least_once = v;
        self
    }
    /// Sets [`consumer_groups`](Self::consumer_groups).
    pub const fn with_consumer_groups(mut self, v: bool) -> Self {
        self.consumer_groups = v;
        self
    }
    /// Sets [`ordering`](Self::ordering).
    pub const fn with_ordering(mut self, v: MessageOrder) -> Self {
        self.ordering = v;
        self
    }
    /// Sets [`replay`](Self::replay).
    pub const fn with_replay(mut self, v: bool) -> Self {
        self.replay = v;
        self
    }
    /// Sets [`native_dead_letter`](Self::native_dead_letter).
    pub const fn with_native_dead_letter(mut self, v: bool) -> Self {
        self.native_dead_letter = v;
        self
    }
    /// Sets [`native_retry_after`](Self::native_retry_after).
    pub const fn with_native_retry_after(mut self, v: bool) -> Self {
        self.native_retry_after = v;
        self
    }
    /// Sets [`native_deliver_at`](Self::native_deliver_at).
    pub const fn with_native_deliver_at(mut self, v: bool) -> Self {
        self.native_deliver_at = v;
        self
    }
    /// Sets [`native_ttl`](Self::native_ttl).
    pub const fn with_native_ttl(mut self, v: bool) -> Self {
        self.native_ttl = v;
        self
    }
    /// Sets [`native_reply_to`](Self::native_reply_to).
    pub const fn with_native_reply_to(mut self, v: bool) -> Self {
        self.native_reply_to = v;
        self
    }
    /// Sets [`native_dedup`](Self::native_dedup).
    pub const fn with_native_dedup(mut self, v: bool) -> Self {
        self.native_dedup = v;
        self
    }
    /// Sets [`wildcards`](Self::wildcards).
    pub const fn with_wildcards(mut self, v: bool) -> Self {
        self.wildcards = v;
        self
    }
    /// Sets [`max_message_size`](Self::max_message_size).
    pub const fn with_max_message_size(mut self, v: Option<usize>) -> Self {
        self.max_message_size = v;
        self
    }
    /// Sets [`cloudevents`](Self::cloudevents).
    pub const fn with_cloudevents(mut self, v: CloudEventsBinding) -> Self {
        self.cloudevents = v;
        self
    }
}
