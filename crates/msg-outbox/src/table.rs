//! The outbox's table name, checked once so that it can be put into SQL.

use msg_core::{Error, Result};

/// The table that holds the outbox's rows, by default `msg_outbox`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Table(String);

impl Default for Table {
    fn default() -> Self {
        Self("msg_outbox".to_owned())
    }
}

impl Table {
    /// The inbox's default table, `msg_inbox`.
    pub(crate) fn default_inbox() -> Self {
        Self("msg_inbox".to_owned())
    }

    /// `name`, which SQL takes unquoted: a letter or `_`, then letters,
    /// digits and `_`, at most 48 bytes (PostgreSQL's limit of 63 less
    /// the suffixes of the indexes named after it). An optional schema
    /// prefix (`schema.table`) follows the same rules.
    pub(crate) fn new(name: &str) -> Result<Self> {
        let valid_part = |part: &str| {
            let mut bytes = part.bytes();
            matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
                && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        };
        let parts: Vec<&str> = name.split('.').collect();
        if name.len() > 48 || parts.len() > 2 || !parts.iter().all(|p| valid_part(p)) {
            return Err(Error::invalid_config(format!(
                "outbox table name {name:?}: use letters, digits and _ (not first), \
                 at most 48 bytes, optionally schema.table"
            )));
        }
        Ok(Self(name.to_owned()))
    }

    /// The name, to put into SQL.
    pub(crate) fn name(&self) -> &str {
        &self.0
    }

    /// A table beside this one, in its schema: `<table>_<suffix>`.
    pub(crate) fn beside(&self, suffix: &str) -> String {
        format!("{}_{suffix}", self.0)
    }

    /// A name derived from the table's, for its indexes and channel.
    pub(crate) fn derived(&self, suffix: &str) -> String {
        format!("{}_{suffix}", self.0.replace('.', "_"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_sql_takes_unquoted_are_accepted() {
        for good in ["msg_outbox", "_o", "billing.outbox", "Outbox2"] {
            assert!(Table::new(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "1outbox",
            "out box",
            "outbox; DROP TABLE users",
            "a.b.c",
            "o\"x",
            &"x".repeat(49),
        ] {
            assert!(
                matches!(Table::new(bad), Err(Error::InvalidConfig { .. })),
                "{bad}"
            );
        }
    }
}
