//! `plinth queue`: apps waiting for resources and why offers were declined.
use reqwest::Method;
use serde_json::Value;

use super::master::MasterClient;
use super::render::{display, number, output, table, text};

pub async fn show(master: &MasterClient, json_out: bool) -> anyhow::Result<()> {
    // Plinth's queue (`/v1/queue`): Marathon's offer summary and readable reasons.
    let body = master.call(Method::GET, "/v1/queue", None).await?;
    output(json_out, &body, queue_table)
}

/// Why offers were declined, from Marathon's `processedOffersSummary` (or a plain list of
/// reasons when the master gives one).
fn decline_reasons(item: &Value) -> String {
    let summary = item.get("processedOffersSummary");
    let reasons: Vec<String> = summary
        .and_then(|s| s.get("rejectSummaryLastOffers"))
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter(|r| number(r, "declined") > 0.0)
                .map(|r| format!("{} ({}/{})", text(r, "reason"), number(r, "declined"), number(r, "processed")))
                .collect()
        })
        .unwrap_or_default();
    if !reasons.is_empty() {
        return reasons.join(", ");
    }
    ["reasons", "declineReasons", "lastDeclineReasons"]
        .iter()
        .find_map(|key| item.get(*key).or_else(|| summary.and_then(|s| s.get(*key))))
        .map(display)
        .unwrap_or_else(|| "-".to_string())
}

fn queue_table(body: &Value) -> String {
    let queue = body.get("queue").and_then(Value::as_array).cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> = queue
        .iter()
        .map(|item| {
            let app = text(item, "appId");
            let offers = item
                .pointer("/processedOffersSummary/processedOffersCount")
                .map(display)
                .unwrap_or_else(|| "-".to_string());
            let delay =
                item.pointer("/delay/timeLeftSeconds").map(|d| format!("{}s", display(d))).unwrap_or("-".into());
            vec![app, text(item, "count"), offers, delay, decline_reasons(item)]
        })
        .collect();
    table(&["APP", "WAITING", "OFFERS", "DELAY", "DECLINED BECAUSE"], &rows)
}
#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn queue_shows_decline_reasons() {
        let item = json!({"appId": "/big", "count": 1, "processedOffersSummary": {"processedOffersCount": 4,
            "rejectSummaryLastOffers": [{"reason": "InsufficientMemory", "declined": 2, "processed": 2},
                                        {"reason": "InsufficientCpus", "declined": 0, "processed": 2}]}});
        assert_eq!(decline_reasons(&item), "InsufficientMemory (2/2)");
        let out = queue_table(&json!({"queue": [item]}));
        assert!(out.contains("/big") && out.contains("InsufficientMemory"), "{out}");
    }
}
