//! Timestamps as Marathon writes them (`2015-02-26T09:21:34.471Z`), kept as milliseconds
//! so the pure cores can take time as a plain input.
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn from_millis(ms: i64) -> Self {
        Timestamp(ms)
    }
    pub fn now() -> Self {
        Timestamp(Utc::now().timestamp_millis())
    }
    pub fn millis(self) -> i64 {
        self.0
    }
    pub fn plus_millis(self, ms: i64) -> Self {
        Timestamp(self.0.saturating_add(ms))
    }
    pub fn seconds_since(self, earlier: Timestamp) -> f64 {
        (self.0 - earlier.0) as f64 / 1000.0
    }
    /// ISO-8601 with milliseconds and `Z`, as Marathon prints.
    pub fn to_iso(self) -> String {
        let dt: DateTime<Utc> = Utc.timestamp_millis_opt(self.0).single().unwrap_or_default();
        dt.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
    }
    pub fn parse_iso(text: &str) -> Option<Self> {
        DateTime::parse_from_rfc3339(text).ok().map(|d| Timestamp(d.timestamp_millis()))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_iso())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn iso_round_trip() {
        let t = Timestamp(1_424_942_494_471);
        assert_eq!(t.to_iso(), "2015-02-26T09:21:34.471Z");
        assert_eq!(Timestamp::parse_iso(&t.to_iso()), Some(t));
    }
}
