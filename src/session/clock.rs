//! The clock sessions, flows and tokens are timed by. A leaf.

/// Unix seconds now.
pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}
