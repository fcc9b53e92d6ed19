//! The event bus behind `/v2/events` and `/v1/events` (SSE) and HTTP callback subscriptions.
//!
//! Events are published only after the change they describe is on disk. The bus is a
//! tokio broadcast channel: a slow SSE client lags and skips, it never slows the core.
//! Each callback subscriber has its own worker with a bounded queue (the oldest event is
//! dropped and counted when full) that POSTs events with a few retries.
//!
//! Apps' `env` values are secrets more often than not (passwords, keys), and every event
//! stream reader and callback would see them: unless the master runs with
//! `--events-include-env`, the bus replaces them with [`REDACTED`] before anyone gets the
//! event (the names stay, so a reader still sees what changed).
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, Notify};

use plinth_protocol::error_chain;
use serde_json::Value;

use crate::access::AccessConfig;
use plinth_protocol::views::app::App;
use plinth_protocol::views::events::{is_marathon_event, ApiPostEvent, SubscriptionEvent};
use plinth_protocol::AppDefinition;
use plinth_scheduler::Event;

/// How many events a lagging SSE client may fall behind before it skips.
const BUS_CAPACITY: usize = 4096;
/// Per callback subscriber: events queued while its endpoint is slow or down.
pub const CALLBACK_QUEUE: usize = 1024;
/// Delays between attempts to deliver one event to a callback.
const RETRY_DELAYS: [Duration; 3] = [Duration::from_millis(200), Duration::from_secs(1), Duration::from_secs(3)];
const CALLBACK_TIMEOUT: Duration = Duration::from_secs(5);

/// What an event carries instead of an `env` value.
pub const REDACTED: &str = "<redacted>";

/// Fan-out of events to SSE streams and callback workers.
pub struct EventBus {
    sender: broadcast::Sender<Arc<Event>>,
    published: AtomicU64,
    /// Replace apps' `env` values in every event (see the module comment).
    redact_env: bool,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    /// A bus that passes events as they are.
    pub fn new() -> Self {
        Self::redacting(false)
    }

    /// A bus that replaces apps' `env` values when `redact_env`.
    pub fn redacting(redact_env: bool) -> Self {
        let (sender, _) = broadcast::channel(BUS_CAPACITY);
        EventBus { sender, published: AtomicU64::new(0), redact_env }
    }

    pub fn publish(&self, mut event: Event) {
        // A body not yet built is one without app definitions (`Payload::lazy`): no env.
        if let Some(payload) = self.redact_env.then(|| event.payload.rendered_mut()).flatten() {
            redact_env(payload);
        }
        self.published.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(event_type = %event.event_type, "event published");
        // No receiver is not an error: nobody listens right now.
        let _ = self.sender.send(Arc::new(event));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.sender.subscribe()
    }

    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }
}

/// Replaces the values of every `env` object in an event (an app definition's, wherever it
/// sits: `appDefinition`, a deployment plan's apps, a group's). A label or field named `env`
/// holding a plain string is not an app's environment and stays.
pub fn redact_env(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map.iter_mut() {
                match inner {
                    Value::Object(env) if key == "env" => {
                        for variable in env.values_mut() {
                            *variable = Value::String(REDACTED.into());
                        }
                    }
                    _ => redact_env(inner),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_env),
        _ => {}
    }
}

/// One callback subscriber's queue and counters.
struct Worker {
    queue: Mutex<VecDeque<Arc<Event>>>,
    wake: Notify,
    dropped: AtomicU64,
    delivered: AtomicU64,
    failed: AtomicU64,
    /// Set when the subscription is removed.
    stop: AtomicBool,
}

/// Counters of callback delivery, for `/metrics`.
#[derive(Debug, Default, Clone, Copy)]
pub struct CallbackStats {
    pub subscribers: usize,
    pub delivered: u64,
    pub failed: u64,
    pub dropped: u64,
}

/// The running callback workers, by URL.
pub struct CallbackHub {
    workers: Mutex<HashMap<String, Arc<Worker>>>,
    client: reqwest::Client,
    /// Which URLs may receive events (`--event-callback-allow`).
    access: AccessConfig,
}

impl Default for CallbackHub {
    fn default() -> Self {
        Self::new()
    }
}

impl CallbackHub {
    /// A hub that accepts every URL (an open API's default).
    pub fn new() -> Self {
        Self::with_policy(AccessConfig::default())
    }

    /// A hub that starts workers only for URLs `access` allows.
    pub fn with_policy(access: AccessConfig) -> Self {
        plinth_oci::tls::install_provider();
        let client = reqwest::Client::builder().timeout(CALLBACK_TIMEOUT).build().unwrap_or_else(|e| {
            tracing::warn!(error = %error_chain(&e), "cannot build the callback HTTP client with a timeout; using defaults");
            reqwest::Client::new()
        });
        CallbackHub { workers: Mutex::new(HashMap::new()), client, access }
    }

    /// Whether `url` may be subscribed; the refusal in words.
    pub fn check(&self, url: &str) -> Result<(), String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("callbackUrl '{url}' is not a valid URL: {e}"))?;
        self.access.check_callback(&parsed)
    }

    /// Starts a worker for `url` unless one runs already. A URL the policy refuses (a
    /// subscription stored before the master was restarted with another allow list) gets
    /// no worker, and a warning.
    pub fn add(&self, url: &str) {
        if let Err(why) = self.check(url) {
            tracing::warn!(callback_url = %url, reason = %why, "callback subscriber not started");
            return;
        }
        let mut workers = self.workers.lock().expect("callback worker map is never poisoned");
        if workers.contains_key(url) {
            return;
        }
        let worker = Arc::new(Worker {
            queue: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            dropped: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        workers.insert(url.to_string(), worker.clone());
        tokio::spawn(deliver(self.client.clone(), url.to_string(), worker));
        tracing::info!(callback_url = %url, "callback subscriber added");
    }

    pub fn remove(&self, url: &str) -> bool {
        let removed = self.workers.lock().expect("callback worker map is never poisoned").remove(url);
        if let Some(worker) = &removed {
            worker.stop.store(true, Ordering::Relaxed);
            worker.wake.notify_one();
            tracing::info!(callback_url = %url, "callback subscriber removed");
        }
        removed.is_some()
    }

    pub fn urls(&self) -> Vec<String> {
        let mut urls: Vec<String> =
            self.workers.lock().expect("callback worker map is never poisoned").keys().cloned().collect();
        urls.sort();
        urls
    }

    /// Queues an event for every subscriber; never blocks. Only Marathon's event types go
    /// out (Marathon's callback receivers parse those); Plinth's own stay on `/v1/events`.
    pub fn dispatch(&self, event: &Arc<Event>) {
        if !is_marathon_event(&event.event_type) {
            return;
        }
        let workers = self.workers.lock().expect("callback worker map is never poisoned");
        for (url, worker) in workers.iter() {
            let mut queue = worker.queue.lock().expect("callback queue is never poisoned");
            if queue.len() >= CALLBACK_QUEUE {
                queue.pop_front();
                let dropped = worker.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if dropped == 1 || dropped % 1000 == 0 {
                    tracing::warn!(callback_url = %url, dropped, "callback subscriber is too slow; dropping its oldest events");
                }
            }
            queue.push_back(event.clone());
            worker.wake.notify_one();
        }
    }

    pub fn stats(&self) -> CallbackStats {
        let workers = self.workers.lock().expect("callback worker map is never poisoned");
        let mut stats = CallbackStats { subscribers: workers.len(), ..Default::default() };
        for worker in workers.values() {
            stats.delivered += worker.delivered.load(Ordering::Relaxed);
            stats.failed += worker.failed.load(Ordering::Relaxed);
            stats.dropped += worker.dropped.load(Ordering::Relaxed);
        }
        stats
    }

    /// Feeds every bus event to the workers until the bus closes.
    pub fn spawn_dispatcher(self: &Arc<Self>, bus: &EventBus) {
        let mut receiver = bus.subscribe();
        let hub = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                match receiver.recv().await {
                    Ok(event) => match hub.upgrade() {
                        Some(hub) => hub.dispatch(&event),
                        None => return,
                    },
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(skipped = n, "callback dispatcher lagged behind the event bus");
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }
}

/// A subscriber's worker: POSTs queued events in order, retrying each a few times.
async fn deliver(client: reqwest::Client, url: String, worker: Arc<Worker>) {
    loop {
        let next = worker.queue.lock().expect("callback queue is never poisoned").pop_front();
        let Some(event) = next else {
            if worker.stop.load(Ordering::Relaxed) {
                return;
            }
            worker.wake.notified().await;
            if worker.stop.load(Ordering::Relaxed) {
                return;
            }
            continue;
        };
        let mut attempt = 0;
        loop {
            let result = client.post(&url).json(&event.payload).send().await;
            match result {
                Ok(response) if response.status().is_success() => {
                    worker.delivered.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                outcome => {
                    let why = match outcome {
                        Ok(response) => format!("HTTP {}", response.status()),
                        Err(e) => error_chain(&e).to_string(),
                    };
                    if attempt >= RETRY_DELAYS.len() || worker.stop.load(Ordering::Relaxed) {
                        worker.failed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(callback_url = %url, event_type = %event.event_type, error = %why,
                            "giving up delivering an event to a callback subscriber");
                        break;
                    }
                    tokio::time::sleep(RETRY_DELAYS[attempt]).await;
                    attempt += 1;
                }
            }
        }
    }
}

/// `subscribe_event` / `unsubscribe_event` payloads (an unknown client address is `""`).
pub fn subscription_event(
    event_type: &str,
    callback_url: &str,
    client_ip: Option<&str>,
    now: plinth_protocol::Timestamp,
) -> Event {
    let body = SubscriptionEvent {
        client_ip: client_ip.unwrap_or_default().to_string(),
        callback_url: callback_url.to_string(),
    };
    // Two plain strings always serialize.
    Event::new(event_type, now, serde_json::to_value(body).unwrap_or_default())
}

/// `api_post_event`: emitted by the API for app creates and updates.
pub fn api_post_event(
    client_ip: Option<&str>,
    uri: &str,
    app: &AppDefinition,
    now: plinth_protocol::Timestamp,
) -> Event {
    let body = ApiPostEvent {
        client_ip: client_ip.unwrap_or_default().to_string(),
        uri: uri.to_string(),
        app_definition: App::of(app),
    };
    Event::of(now, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_values_are_redacted_wherever_an_app_sits_and_names_stay() {
        let mut payload = serde_json::json!({
            "appDefinition": {"id": "/db", "env": {"PASSWORD": "hunter2", "REF": {"secret": "db"}}},
            "plan": {"target": {"apps": [{"id": "/a", "env": {"KEY": "abc"}}], "groups": []}},
            "labels": {"env": "prod"},
        });
        let bus = EventBus::redacting(true);
        let mut receiver = bus.subscribe();
        bus.publish(Event::new("api_post_event", plinth_protocol::Timestamp::now(), payload.clone()));
        let seen = receiver.try_recv().unwrap().payload.clone();
        assert_eq!(seen["appDefinition"]["env"], serde_json::json!({"PASSWORD": REDACTED, "REF": REDACTED}));
        assert_eq!(seen["plan"]["target"]["apps"][0]["env"], serde_json::json!({"KEY": REDACTED}));
        assert_eq!(seen["labels"]["env"], "prod", "a label named env is no environment");
        assert!(!seen.to_string().contains("hunter2"), "{seen}");

        let plain = EventBus::redacting(false);
        let mut receiver = plain.subscribe();
        plain.publish(Event::new("api_post_event", plinth_protocol::Timestamp::now(), payload.clone()));
        assert_eq!(receiver.try_recv().unwrap().payload["appDefinition"]["env"]["PASSWORD"], "hunter2");
        redact_env(&mut payload);
        assert_eq!(payload["appDefinition"]["env"]["PASSWORD"], REDACTED);
    }

    #[tokio::test]
    async fn a_stuck_subscriber_drops_its_oldest_events_without_blocking() {
        let hub = CallbackHub::new();
        // Nothing listens on port 9 (discard) of loopback: every attempt fails.
        hub.add("http://127.0.0.1:9/cb");
        hub.add("http://127.0.0.1:9/cb");
        assert_eq!(hub.urls().len(), 1);
        let event =
            Arc::new(Event::new("app_terminated_event", plinth_protocol::Timestamp::now(), serde_json::json!({})));
        let extra = 100;
        for _ in 0..CALLBACK_QUEUE + extra {
            hub.dispatch(&event);
        }
        let stats = hub.stats();
        assert_eq!(stats.subscribers, 1);
        let dropped = usize::try_from(stats.dropped).unwrap();
        assert!(dropped >= extra - 1 && dropped <= extra, "{stats:?}");
        assert!(hub.remove("http://127.0.0.1:9/cb"));
        assert!(!hub.remove("http://127.0.0.1:9/cb"));
        assert!(hub.urls().is_empty());
    }
}
