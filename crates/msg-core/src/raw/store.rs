//! Helpers for crates that keep messages in a database (the outbox, the
//! scheduler).

/// Whether a database error with this code may go away when tried again:
/// SQLite's BUSY (5) and LOCKED (6) with their extended codes; PostgreSQL's
/// SQLSTATEs for a serialization failure or deadlock (class 40), a lock not
/// available (55P03), insufficient resources such as too many connections
/// (class 53), an operator intervention such as a shutdown (57P), and a
/// connection exception (class 08).
///
/// ```
/// use msg_core::raw::store::retryable_sql_code;
/// assert!(retryable_sql_code("40001"));
/// assert!(retryable_sql_code("5"));
/// assert!(!retryable_sql_code("23505"), "a unique violation stays");
/// ```
pub fn retryable_sql_code(code: &str) -> bool {
    matches!(code, "5" | "6" | "261" | "517" | "262")
        || code.starts_with("40")
        || code == "55P03"
        || code.starts_with("53")
        || code.starts_with("57P")
        || code.starts_with("08")
}
