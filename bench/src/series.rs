//! Timed samples of one contender and their median, as the benchmarks report them.
use std::time::Instant;

/// Milliseconds per sample, and their median, for one contender.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Series {
    pub name: String,
    pub samples_ms: Vec<f64>,
    pub median_ms: Option<f64>,
    pub note: Option<String>,
}

impl Series {
    pub fn new(name: &str, samples_ms: Vec<f64>) -> Series {
        Series { name: name.into(), median_ms: median(&samples_ms), samples_ms, note: None }
    }

    pub fn failed(name: &str, why: String) -> Series {
        Series { name: name.into(), samples_ms: Vec::new(), median_ms: None, note: Some(why) }
    }
}

fn median(samples: &[f64]) -> Option<f64> {
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    sorted.get(sorted.len() / 2).copied()
}

pub fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}
