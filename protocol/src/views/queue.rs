//! `GET /v2/queue` as Marathon writes it (`queue.raml`, `offer.raml`), without the `role`
//! Marathon 1.9 added: the Python `marathon` client (0.13) refuses items that have it.
use serde::{Deserialize, Serialize};

use super::app::App;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Queue {
    pub queue: Vec<QueueItem>,
}

/// An app waiting for launches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueItem {
    pub count: usize,
    pub delay: QueueDelay,
    pub since: String,
    pub processed_offers_summary: ProcessedOffersSummary,
    /// Only with `embed=lastUnusedOffers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_unused_offers: Option<Vec<UnusedOffer>>,
    pub app: App,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueDelay {
    pub time_left_seconds: i64,
    pub overdue: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessedOffersSummary {
    pub processed_offers_count: u64,
    pub unused_offers_count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_unused_offer_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_offer_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reject_summary_last_offers: Option<Vec<DeclinedOfferStep>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reject_summary_launch_attempt: Option<Vec<DeclinedOfferStep>>,
}

/// How many of the processed offers were declined for one reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeclinedOfferStep {
    pub reason: String,
    pub declined: u64,
    pub processed: u64,
}

/// An offer that could not be used, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnusedOffer {
    pub offer: Offer,
    pub reason: Vec<String>,
    pub timestamp: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Offer {
    pub id: String,
    pub hostname: String,
    pub agent_id: String,
    pub resources: Vec<OfferResource>,
    pub attributes: Vec<AgentAttribute>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OfferResource {
    pub name: String,
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scalar: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranges: Option<Vec<NumberRange>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentAttribute {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scalar: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranges: Option<Vec<NumberRange>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumberRange {
    pub begin: i64,
    pub end: i64,
}
