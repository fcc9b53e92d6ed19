//! `GET /metrics` as Marathon 1.7+ writes it for JSON clients (`newMetrics.raml`):
//! metrics by kind and name. Prometheus text of the same metrics is at
//! `/metrics/prometheus` (and at `/metrics` for `Accept: text/plain`).
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The version of the metrics JSON layout (Dropwizard's, which Marathon writes).
pub const METRICS_JSON_VERSION: &str = "4.0.0";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub version: String,
    pub counters: BTreeMap<String, Counter>,
    pub gauges: BTreeMap<String, Gauge>,
    pub histograms: BTreeMap<String, Histogram>,
    pub meters: BTreeMap<String, Meter>,
    pub timers: BTreeMap<String, Timer>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    pub count: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Gauge {
    pub value: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    pub count: u64,
    pub min: f64,
    pub mean: f64,
    pub max: f64,
    pub p50: f64,
    pub p75: f64,
    pub p95: f64,
    pub p98: f64,
    pub p99: f64,
    pub p999: f64,
    pub stddev: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meter {
    pub count: u64,
    pub m1_rate: f64,
    pub m5_rate: f64,
    pub m15_rate: f64,
    pub mean_rate: f64,
    pub units: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timer {
    pub count: u64,
    pub min: f64,
    pub mean: f64,
    pub max: f64,
    pub p50: f64,
    pub p75: f64,
    pub p95: f64,
    pub p98: f64,
    pub p99: f64,
    pub p999: f64,
    pub stddev: f64,
    pub m1_rate: f64,
    pub m5_rate: f64,
    pub m15_rate: f64,
    pub mean_rate: f64,
    pub duration_units: String,
    pub rate_units: String,
}
