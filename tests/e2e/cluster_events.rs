//! The event bus as users consume it: the SSE stream and HTTP callback subscribers.

use crate::common::*;
use serde_json::{json, Value};

fn event_type(value: &Value) -> &str {
    value.get("eventType").and_then(Value::as_str).unwrap_or_default()
}

fn is_running_update(value: &Value, app: &str) -> bool {
    event_type(value) == "status_update_event" && value["taskStatus"] == "TASK_RUNNING" && value["appId"] == app
}

#[test]
fn sse_stream_and_callback_subscriber_receive_the_events() {
    let cluster = Cluster::start("events", 1);
    let api = cluster.api();

    let callback = CallbackServer::start(cluster.gateway());
    let subscribed = api.post_raw(&format!("/v2/eventSubscriptions?callbackUrl={}", callback.url), Vec::new());
    assert_eq!(subscribed.status, 200, "{}", subscribed.text);
    let listed = api.get_json("/v2/eventSubscriptions");
    assert_eq!(listed["callbackUrls"], json!([callback.url]), "{listed}");

    let stream = EventStream::open(&format!("{}/v2/events", cluster.master_url()));
    let filtered = EventStream::open(&format!("{}/v2/events?event_type=deployment_success", cluster.master_url()));
    wait_until("the streams to attach", secs(10), || {
        let (all, only) = (stream.names(), filtered.names());
        if !all.is_empty() && !only.is_empty() {
            Ok(())
        } else {
            Err(format!("{all:?} / {only:?}"))
        }
    });
    assert_eq!(stream.names()[0], "event_stream_attached");

    cluster.deploy(&cmd_app("/evented", "sleep 1000", 1));

    let names = wait_until("the SSE stream to carry the deployment's events", secs(30), || {
        let events = stream.snapshot();
        let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
        let running =
            events.iter().any(|(name, data)| name == "status_update_event" && is_running_update(data, "/evented"));
        let complete = ["api_post_event", "deployment_info", "deployment_success"].iter().all(|n| names.contains(n));
        if running && complete {
            Ok(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        } else {
            Err(format!("{names:?}"))
        }
    });
    // Each SSE `event:` name matches the `eventType` inside its data.
    for (name, data) in stream.snapshot().iter().filter(|(name, _)| name != "event_stream_attached") {
        assert_eq!(event_type(data), name, "{data}");
    }
    let position = |n: &str| names.iter().position(|x| x == n).expect("present");
    assert!(position("api_post_event") < position("deployment_success"), "{names:?}");

    wait_until("the callback subscriber to receive the same events", secs(30), || {
        let bodies = callback.snapshot();
        let types: Vec<&str> = bodies.iter().map(event_type).collect();
        let running = bodies.iter().any(|b| is_running_update(b, "/evented"));
        if running && types.contains(&"deployment_success") && types.contains(&"api_post_event") {
            Ok(())
        } else {
            Err(format!("{types:?}"))
        }
    });

    filtered.wait_for("deployment_success", secs(30));
    let unexpected: Vec<String> =
        filtered.names().into_iter().filter(|n| n != "deployment_success" && n != "event_stream_attached").collect();
    assert!(unexpected.is_empty(), "event_type=deployment_success let through {unexpected:?}");

    // Unsubscribing stops the callbacks.
    let removed = api.delete(&format!("/v2/eventSubscriptions?callbackUrl={}", callback.url));
    assert_eq!(removed.status, 200, "{}", removed.text);
    assert_eq!(api.get_json("/v2/eventSubscriptions")["callbackUrls"], json!([]));
    let received = callback.snapshot().len();
    api.delete("/v2/apps/evented").expect_status(200);
    stream.wait_for("app_terminated_event", secs(30));
    std::thread::sleep(secs(2));
    let after: Vec<String> = callback.snapshot()[received..].iter().map(|b| event_type(b).to_string()).collect();
    assert!(after.is_empty(), "an unsubscribed callback still received {after:?}");
}
