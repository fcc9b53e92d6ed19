//! The labels the service balancer reads, checked when an app enters: marathon-lb's
//! `HAPROXY_{n}_VHOST` (comma-separated host names), `HAPROXY_{n}_MODE` (`tcp` or `http`)
//! and Plinth's `PLINTH_DRAIN_SECONDS`.
use std::collections::BTreeMap;

/// Seconds a planned kill waits at most for the balancers to drop the task.
pub const DRAIN_SECONDS_LABEL: &str = "PLINTH_DRAIN_SECONDS";

/// Longest drain an app may ask for.
pub const MAX_DRAIN_SECONDS: f64 = 3600.0;

/// `(path, error)` for each balancer label with a value the balancer could not use.
pub fn violations(labels: &BTreeMap<String, String>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (key, value) in labels {
        let path = format!("/labels/{key}");
        if key == DRAIN_SECONDS_LABEL {
            match value.trim().parse::<f64>() {
                Ok(s) if s.is_finite() && (0.0..=MAX_DRAIN_SECONDS).contains(&s) => {}
                _ => out.push((path, format!("must be a number of seconds between 0 and {MAX_DRAIN_SECONDS}"))),
            }
        } else if is_port_label(key, "_MODE") {
            if crate::agent::LbMode::parse(value).is_none() {
                out.push((path, format!("must be tcp or http, not {value:?}")));
            }
        } else if is_port_label(key, "_VHOST") {
            let bad: Vec<&str> = value
                .split(',')
                .map(str::trim)
                .filter(|h| !crate::is_valid_hostname(h.trim_start_matches("*.")))
                .collect();
            if !bad.is_empty() {
                out.push((path, format!("must be comma-separated host names; not host names: {bad:?}")));
            }
        }
    }
    out
}

/// `HAPROXY_{n}{suffix}` for a port index n.
fn is_port_label(key: &str, suffix: &str) -> bool {
    key.strip_prefix("HAPROXY_")
        .and_then(|rest| rest.strip_suffix(suffix))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_balancer_labels_are_named_and_good_ones_pass() {
        let labels = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert!(violations(&labels(&[
            ("HAPROXY_0_VHOST", "a.example.com, b.example.com"),
            ("HAPROXY_0_MODE", "HTTP"),
            ("HAPROXY_1_MODE", " tcp"),
            (DRAIN_SECONDS_LABEL, "2.5")
        ]))
        .is_empty());
        let bad = violations(&labels(&[
            ("HAPROXY_0_VHOST", "good.example, bad host!"),
            (DRAIN_SECONDS_LABEL, "soon"),
            ("HAPROXY_VHOST", "not checked"),
        ]));
        let paths: Vec<&str> = bad.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, vec!["/labels/HAPROXY_0_VHOST", "/labels/PLINTH_DRAIN_SECONDS"]);
        assert!(bad[0].1.contains("bad host!"));
        assert_eq!(violations(&labels(&[(DRAIN_SECONDS_LABEL, "-1")])).len(), 1);
        assert_eq!(violations(&labels(&[("HAPROXY_1_VHOST", "")])).len(), 1);
        let mode = violations(&labels(&[("HAPROXY_0_MODE", "https"), ("HAPROXY_MODE", "not checked")]));
        assert_eq!(
            mode,
            vec![("/labels/HAPROXY_0_MODE".to_string(), "must be tcp or http, not \"https\"".to_string())]
        );
    }
}
