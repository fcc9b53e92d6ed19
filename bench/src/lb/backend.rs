//! The backends of `plinth bench lb`: a small keep-alive HTTP server (axum on one tokio
//! thread) that the bench's app runs as its command tasks, `plinth bench lb-backend --port
//! $PORT0`. Fast and steady, so that the balancers, not the backends, set the pace.
use anyhow::Context;
use axum::routing::get;

/// Serves `GET /` (the answer and the health check) on `0.0.0.0:port` until killed.
pub fn serve(port: u16) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let answer = format!("hello from {port}\n");
        let app = axum::Router::new().route("/", get(move || std::future::ready(answer.clone())));
        let listener =
            tokio::net::TcpListener::bind(("0.0.0.0", port)).await.with_context(|| format!("listening on {port}"))?;
        axum::serve(listener, app).await.context("serving")
    })
}
