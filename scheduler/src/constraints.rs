//! Placement constraints (`UNIQUE`, `CLUSTER`, `GROUP_BY`, `LIKE`, `UNLIKE`, `MAX_PER`,
//! `IS`) evaluated against an agent's hostname and attributes.
use std::collections::{BTreeSet, HashMap};

use plinth_protocol::{Attributes, Constraint, ConstraintOperator};

/// The value a constraint field has on an agent (`hostname` or an attribute).
pub fn field_value<'a>(field: &str, hostname: &'a str, attributes: &'a Attributes) -> Option<&'a str> {
    if field == "hostname" {
        Some(hostname)
    } else {
        attributes.get(field).map(String::as_str)
    }
}

/// How an app's tasks are spread over one constraint field: value → task count, plus
/// every value the field has on any active agent (for `GROUP_BY`).
#[derive(Debug, Default, Clone)]
pub struct Spread {
    pub counts: HashMap<String, u32>,
    pub all_values: BTreeSet<String>,
}

/// Checks one constraint for placing one more task on an agent whose field has `value`.
/// On refusal, the reason reads like `constraint hostname UNIQUE`.
pub fn allows(constraint: &Constraint, value: Option<&str>, spread: &Spread) -> Result<(), String> {
    let refuse = || {
        let mut text = format!("constraint {} {}", constraint.field, constraint.operator.as_str());
        if let Some(v) = &constraint.value {
            text.push(' ');
            text.push_str(v);
        }
        Err(text)
    };
    let count_of = |v: &str| spread.counts.get(v).copied().unwrap_or(0);
    let full_match =
        |pattern: &str, v: &str| regex::Regex::new(&format!("^(?:{pattern})$")).map(|r| r.is_match(v)).unwrap_or(false);
    let ok = match constraint.operator {
        ConstraintOperator::Unique => value.is_some_and(|v| count_of(v) == 0),
        ConstraintOperator::Cluster => match (&constraint.value, value) {
            (Some(wanted), Some(v)) => wanted == v,
            (None, Some(v)) => spread.counts.iter().all(|(k, n)| *n == 0 || k == v),
            (_, None) => false,
        },
        ConstraintOperator::Is => value.is_some() && constraint.value.as_deref() == value,
        ConstraintOperator::Like => match (&constraint.value, value) {
            (Some(p), Some(v)) => full_match(p, v),
            _ => false,
        },
        ConstraintOperator::Unlike => match (&constraint.value, value) {
            (Some(p), Some(v)) => !full_match(p, v),
            (_, None) => true,
            _ => false,
        },
        ConstraintOperator::MaxPer => {
            let max: u32 = constraint.value.as_deref().and_then(|v| v.parse().ok()).unwrap_or(1);
            value.is_some_and(|v| count_of(v) < max)
        }
        ConstraintOperator::GroupBy => match value {
            None => false,
            Some(v) => {
                // Place on a least-loaded group, so tasks spread evenly across values.
                let min = spread.all_values.iter().map(|x| count_of(x)).min().unwrap_or(0);
                count_of(v) <= min
            }
        },
    };
    if ok {
        Ok(())
    } else {
        refuse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn c(raw: serde_json::Value) -> Constraint {
        Constraint::parse(raw.as_array().unwrap()).unwrap()
    }

    fn spread(pairs: &[(&str, u32)], all: &[&str]) -> Spread {
        Spread {
            counts: pairs.iter().map(|(k, n)| (k.to_string(), *n)).collect(),
            all_values: all.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn unique_refuses_a_second_task_on_the_same_host() {
        let unique = c(json!(["hostname", "UNIQUE"]));
        let s = spread(&[("a", 1)], &["a", "b"]);
        assert_eq!(allows(&unique, Some("a"), &s), Err("constraint hostname UNIQUE".into()));
        assert!(allows(&unique, Some("b"), &s).is_ok());
    }

    #[test]
    fn like_unlike_is_and_max_per() {
        let s = Spread::default();
        assert!(allows(&c(json!(["rack", "LIKE", "r[12]"])), Some("r2"), &s).is_ok());
        assert!(allows(&c(json!(["rack", "LIKE", "r[12]"])), Some("r23"), &s).is_err());
        assert!(allows(&c(json!(["rack", "LIKE", "r2"])), None, &s).is_err());
        assert!(allows(&c(json!(["rack", "UNLIKE", "r2"])), Some("r1"), &s).is_ok());
        assert!(allows(&c(json!(["rack", "UNLIKE", "r2"])), None, &s).is_ok());
        assert!(allows(&c(json!(["zone", "IS", "a"])), Some("a"), &s).is_ok());
        assert!(allows(&c(json!(["zone", "IS", "a"])), Some("b"), &s).is_err());
        let two = spread(&[("r1", 2)], &["r1"]);
        assert!(allows(&c(json!(["rack", "MAX_PER", "2"])), Some("r1"), &two).is_err());
        assert!(allows(&c(json!(["rack", "MAX_PER", "3"])), Some("r1"), &two).is_ok());
    }

    #[test]
    fn cluster_and_group_by() {
        let s = spread(&[("r1", 1)], &["r1", "r2"]);
        assert!(allows(&c(json!(["rack", "CLUSTER"])), Some("r1"), &s).is_ok());
        assert!(allows(&c(json!(["rack", "CLUSTER"])), Some("r2"), &s).is_err());
        assert!(allows(&c(json!(["rack", "CLUSTER", "r2"])), Some("r2"), &s).is_ok());
        assert!(allows(&c(json!(["rack", "GROUP_BY"])), Some("r2"), &s).is_ok());
        assert!(allows(&c(json!(["rack", "GROUP_BY"])), Some("r1"), &s).is_err());
    }
}
