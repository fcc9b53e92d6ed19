//! How answers are shown: the API's JSON with `--json`, else text that ends its line;
//! aligned tables; JSON fields and numbers as people read them.
use anyhow::Context;
use serde_json::Value;

pub(super) fn print_json(value: &Value) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value).context("cannot format JSON")?;
    println!("{text}");
    Ok(())
}

pub(super) fn output(json_out: bool, body: &Value, render: impl Fn(&Value) -> String) -> anyhow::Result<()> {
    if json_out {
        print_json(body)
    } else {
        // Every view ends its last line, whatever its renderer did.
        let text = render(body);
        if text.is_empty() || text.ends_with('\n') {
            print!("{text}");
        } else {
            println!("{text}");
        }
        Ok(())
    }
}

/// A field as display text: strings bare, numbers and other JSON compact, missing as `-`.
pub(super) fn text(value: &Value, key: &str) -> String {
    display(value.get(key).unwrap_or(&Value::Null))
}

pub(super) fn display(value: &Value) -> String {
    match value {
        Value::Null => "-".to_string(),
        Value::String(s) if s.is_empty() => "-".to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => "-".to_string(),
        Value::Array(items) => items.iter().map(display).collect::<Vec<_>>().join(","),
        Value::Number(n) => n.as_f64().map(number_text).unwrap_or_else(|| n.to_string()),
        other => other.to_string(),
    }
}

/// `32.0` → `32`, `0.1` → `0.1`: Marathon sends whole numbers as floats.
/// For people: at most two decimals, no trailing zeros (`7.049999999999999` → `7.05`).
pub(super) fn number_text(n: f64) -> String {
    let text = format!("{n:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".to_string()
    } else {
        text.to_string()
    }
}

pub(super) fn number(value: &Value, key: &str) -> f64 {
    value.get(key).and_then(Value::as_f64).unwrap_or(0.0)
}

pub(super) fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        format!("{}…", text.chars().take(max - 1).collect::<String>())
    }
}

/// Left-aligned columns, two spaces apart.
pub(super) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

pub(super) fn used_of(slave: &Value, key: &str) -> String {
    let total = slave.pointer(&format!("/resources/{key}")).and_then(Value::as_f64).unwrap_or(0.0);
    let used = slave.pointer(&format!("/used_resources/{key}")).and_then(Value::as_f64).unwrap_or(0.0);
    format!("{}/{}", number_text(used), number_text(total))
}
/// Tasks as a table (`task list`, `app show`).
pub(super) fn task_table(tasks: &Value) -> String {
    let rows: Vec<Vec<String>> = tasks
        .as_array()
        .map(|list| {
            list.iter()
                .map(|t| {
                    vec![
                        text(t, "id"),
                        text(t, "appId"),
                        text(t, "state"),
                        text(t, "host"),
                        text(t, "ports"),
                        text(t, "startedAt"),
                        text(t, "version"),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    table(&["ID", "APP", "STATE", "HOST", "PORTS", "STARTED", "VERSION"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_columns() {
        let out =
            table(&["ID", "STATE"], &[vec!["/a".into(), "TASK_RUNNING".into()], vec!["/long-id".into(), "-".into()]]);
        assert_eq!(out, "ID        STATE\n/a        TASK_RUNNING\n/long-id  -\n");
    }

    #[test]
    fn whole_numbers_show_without_a_fraction() {
        assert_eq!(number_text(7.049999999999999), "7.05");
        assert_eq!(number_text(8.0), "8");
        assert_eq!(number_text(0.001), "0");
        assert_eq!(
            used_of(&json!({"resources": {"cpus": 8.0}, "used_resources": {"cpus": 7.049999999999999}}), "cpus"),
            "7.05/8"
        );
        assert_eq!(text(&json!({"mem": 32.0, "cpus": 0.1}), "mem"), "32");
        assert_eq!(text(&json!({"mem": 32.0, "cpus": 0.1}), "cpus"), "0.1");
        assert_eq!(text(&json!({}), "mem"), "-");
    }
}
