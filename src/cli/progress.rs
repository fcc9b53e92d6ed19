//! Image pull progress bars on stderr while `--wait` waits for a deployment.
use futures::StreamExt;
use serde_json::Value;

/// Shows the master's image pulls (`image_pull_*` events) as progress bars on stderr
/// while a deployment runs; silent when stderr is not a terminal.
/// `events` is the request for the master's `/v1/events`.
pub(super) async fn show_pull_progress(events: reqwest::RequestBuilder) {
    let Ok(response) = events.send().await.and_then(reqwest::Response::error_for_status) else {
        return;
    };
    let bars = indicatif::MultiProgress::new();
    let mut pulls: std::collections::HashMap<String, indicatif::ProgressBar> = Default::default();
    let (mut buffer, mut event) = (String::new(), String::new());
    let mut stream = response.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find('\n') {
            let line: String = buffer.drain(..=end).collect();
            let line = line.trim_end();
            if let Some(name) = line.strip_prefix("event:") {
                event = name.trim().to_string();
            } else if let Some(data) = line.strip_prefix("data:") {
                if let Ok(data) = serde_json::from_str::<Value>(data.trim()) {
                    show_pull_event(&bars, &mut pulls, &event, &data);
                }
            }
        }
    }
}

fn show_pull_event(
    bars: &indicatif::MultiProgress,
    pulls: &mut std::collections::HashMap<String, indicatif::ProgressBar>,
    event: &str,
    data: &Value,
) {
    if !event.starts_with("image_pull_") {
        return;
    }
    let image = data.get("image").and_then(Value::as_str).unwrap_or("image").to_string();
    let bar = pulls.entry(image.clone()).or_insert_with(|| {
        let bar = bars.add(indicatif::ProgressBar::new(0));
        let style = indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        bar.set_style(style.progress_chars("=> "));
        bar.set_message(format!("pulling {image}"));
        bar
    });
    let number = |key: &str| data.get(key).and_then(Value::as_u64).unwrap_or(0);
    match event {
        "image_pull_progress" => {
            bar.set_length(number("bytesTotal"));
            bar.set_position(number("bytesDone"));
            bar.set_message(format!("pulling {image} (layer {}/{})", number("layersDone"), number("layersTotal")));
        }
        "image_pull_completed" => bar.finish_with_message(format!("pulled {image}")),
        "image_pull_failed" => {
            let message = data.get("message").and_then(Value::as_str).unwrap_or("failed");
            bar.abandon_with_message(format!("pull of {image} failed: {message}"));
        }
        _ => {}
    }
}
