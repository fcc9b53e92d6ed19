//! `plinth logs TASK [--follow] [--stderr]`: a task's output from its agent, read through
//! the master (`/v1/tasks/ID/logs`), which finds the agent and reaches it over the
//! cluster's mutual TLS when there is one.
use anyhow::Context;
use futures::StreamExt;
use reqwest::Method;
use std::io::Write;

use super::agent::path_segment;
use super::master::{api_error, MasterClient, REQUEST_TIMEOUT};

/// Where the agent's log answers say the next read starts.
const LOG_OFFSET_HEADER: &str = "x-plinth-log-offset";

/// Prints `task`'s log as its agent serves it, through the master.
pub(super) async fn run(master: MasterClient, task: &str, follow: bool, stderr: bool) -> anyhow::Result<()> {
    let path = format!("/v1/tasks/{}/logs", path_segment(task)?);
    let stream = if stderr { "stderr" } else { "stdout" };
    let unreachable = |e: reqwest::Error| anyhow::Error::new(e).context("cannot read the log through the master");
    let mut out = std::io::stdout().lock();
    let mut offset: u64 = 0;
    loop {
        let query = format!("?stream={stream}&offset={offset}{}", if follow { "&follow=true" } else { "" });
        let mut request = master.request(Method::GET, &format!("{path}{query}"));
        if !follow {
            request = request.timeout(REQUEST_TIMEOUT);
        }
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        if !status.is_success() {
            let body = response.bytes().await.map_err(unreachable)?;
            return Err(api_error(Method::GET, &path, status, &body).into());
        }
        // Answers are capped in size; the header says where the next read starts.
        let next =
            response.headers().get(LOG_OFFSET_HEADER).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        let mut chunks = response.bytes_stream();
        let mut received = 0;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(unreachable)?;
            received += chunk.len();
            out.write_all(&chunk).context("cannot write to stdout")?;
            if follow {
                out.flush().context("cannot write to stdout")?;
            }
        }
        match next {
            Some(next) if !follow && received > 0 && next > offset => offset = next,
            _ => break,
        }
    }
    out.flush().context("cannot write to stdout")
}
