//! The read model: API reads render from a copy of the core published after commands,
//! never while holding the command lock, so a storm of big reads cannot delay
//! heartbeats, status updates or writes (it once made agents miss their timeout and
//! the whole cluster restart its tasks).
//!
//! - A generation counter is bumped by every command or tick that changed something
//!   (under the lock, after the write), so a read that follows an acknowledged write
//!   always sees it. A copy is also refreshed when older than [`MAX_AGE`], for the few
//!   things that change without a record (last heartbeat times, offer statistics).
//! - Copies are taken lazily, by the first reader that finds the published one stale;
//!   concurrent readers wait for that one copy instead of each taking the lock.
//! - Big answers that many readers ask for alike (`GET /v2/apps`, `/v2/groups`,
//!   `/v2/tasks`) are rendered once per copy and shared: the readers of one copy get the
//!   same bytes, so 64 readers cost one render per change instead of 64.
//! - Rendering runs on the blocking pool with at most [`ReadModel::renderers`] at once,
//!   leaving the async workers (and a core) to the agent protocol and writes. Readers
//!   past [`MAX_WAITING`] get a 429 with `Retry-After` instead of slowing everyone.
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::body::{Body, Bytes};
use axum::http::response::Parts;
use axum::response::Response;
use tokio::sync::{Mutex, OnceCell, Semaphore};

use plinth_scheduler::Core;

use crate::error::ApiError;

/// A published copy older than this is refreshed even without a change.
pub const MAX_AGE: Duration = Duration::from_millis(500);
/// Readers allowed to wait for a renderer before new ones are turned away.
pub const MAX_WAITING: usize = 256;
/// What a turned-away reader is told to wait, in seconds.
pub const RETRY_AFTER_SECS: u64 = 1;

/// Distinct shared answers kept per copy; past this, answers render unshared.
pub const MAX_SHARED_ANSWERS: usize = 32;

/// A rendered answer that readers of one copy share.
#[derive(Clone)]
struct SharedAnswer {
    parts: Arc<Parts>,
    body: Bytes,
}

impl SharedAnswer {
    fn response(&self) -> Response {
        let mut response = Response::new(Body::from(self.body.clone()));
        *response.status_mut() = self.parts.status;
        *response.headers_mut() = self.parts.headers.clone();
        response
    }
}

/// One published copy of the core.
pub struct Snapshot {
    pub core: Core,
    generation: u64,
    taken: Instant,
    /// Answers rendered from this copy, by what was asked (see [`ReadModel::render_shared`]).
    answers: std::sync::Mutex<HashMap<String, Arc<OnceCell<SharedAnswer>>>>,
}

impl Snapshot {
    fn new(core: Core, generation: u64) -> Snapshot {
        Snapshot { core, generation, taken: Instant::now(), answers: std::sync::Mutex::new(HashMap::new()) }
    }

    /// The cell for `key`'s answer, `None` when this copy already holds its maximum.
    fn answer_cell(&self, key: String) -> Option<Arc<OnceCell<SharedAnswer>>> {
        let mut answers = self.answers.lock().expect("answer map is never poisoned");
        if let Some(cell) = answers.get(&key) {
            return Some(cell.clone());
        }
        if answers.len() >= MAX_SHARED_ANSWERS {
            return None;
        }
        Some(answers.entry(key).or_default().clone())
    }
}

pub struct ReadModel {
    published: ArcSwap<Snapshot>,
    /// The generation of the live core (bumped under the command lock).
    generation: AtomicU64,
    /// Held by the one reader taking a new copy.
    refreshing: Mutex<()>,
    renderers: Semaphore,
    renderer_count: usize,
    waiting: AtomicUsize,
}

impl ReadModel {
    /// A read model starting from `core` as it is now.
    pub fn new(core: &Core) -> ReadModel {
        let renderer_count = renderers();
        ReadModel {
            published: ArcSwap::from_pointee(Snapshot::new(core.read_copy(), 0)),
            generation: AtomicU64::new(0),
            refreshing: Mutex::new(()),
            renderers: Semaphore::new(renderer_count),
            renderer_count,
            waiting: AtomicUsize::new(0),
        }
    }

    /// How many reads render at once: all cores but one, at least one.
    pub fn renderers(&self) -> usize {
        self.renderer_count
    }

    /// Marks the live core as changed. Call once the change is in the core (the writer
    /// thread calls it after the change's commit, without the lock: see [`ReadModel::snapshot`]).
    pub fn bump(&self) {
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// The published copy if it is current, else `None` (the caller refreshes).
    fn current(&self) -> Option<Arc<Snapshot>> {
        let snapshot = self.published.load_full();
        let fresh =
            snapshot.generation == self.generation.load(Ordering::Acquire) && snapshot.taken.elapsed() < MAX_AGE;
        fresh.then_some(snapshot)
    }

    /// A current copy; `copy` is called (by one reader at a time) to take a new one
    /// from the live core under the command lock.
    pub async fn snapshot<F, Fut>(&self, copy: F) -> Arc<Snapshot>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Core>,
    {
        if let Some(snapshot) = self.current() {
            return snapshot;
        }
        let _refreshing = self.refreshing.lock().await;
        // Another reader may have refreshed while this one waited.
        if let Some(snapshot) = self.current() {
            return snapshot;
        }
        // Read before the copy: a bump racing with it leaves the copy marked stale,
        // never a stale copy marked current (a bump follows its change into the core).
        let generation = self.generation.load(Ordering::Acquire);
        let core = copy().await;
        let snapshot = Arc::new(Snapshot::new(core, generation));
        self.published.store(snapshot.clone());
        snapshot
    }

    /// Runs `render` over `snapshot` on the blocking pool.
    pub async fn render<R>(snapshot: Arc<Snapshot>, render: R) -> Result<Response, ApiError>
    where
        R: FnOnce(&Core) -> Result<Response, ApiError> + Send + 'static,
    {
        let rendered = tokio::task::spawn_blocking(move || render(&snapshot.core)).await;
        rendered.map_err(|e| ApiError::Internal(format!("rendering the answer failed: {e}")))?
    }

    /// Like [`ReadModel::render`], but readers of one copy asking the same `key` (what
    /// determines the answer: path, query, format) share one rendering. Only successful
    /// answers are shared; an error renders again for the next reader.
    pub async fn render_shared<R>(snapshot: Arc<Snapshot>, key: String, render: R) -> Result<Response, ApiError>
    where
        R: FnOnce(&Core) -> Result<Response, ApiError> + Send + 'static,
    {
        let Some(cell) = snapshot.answer_cell(key) else {
            return Self::render(snapshot, render).await;
        };
        let answer = cell
            .get_or_try_init(|| async move {
                let response = Self::render(snapshot, render).await.map_err(NotShared::Failed)?;
                if !response.status().is_success() {
                    return Err(NotShared::Answer(response));
                }
                let (parts, body) = response.into_parts();
                let body = axum::body::to_bytes(body, usize::MAX)
                    .await
                    .map_err(|e| NotShared::Failed(ApiError::Internal(format!("collecting the answer failed: {e}"))))?;
                Ok(SharedAnswer { parts: Arc::new(parts), body })
            })
            .await;
        match answer {
            Ok(answer) => Ok(answer.response()),
            Err(NotShared::Answer(response)) => Ok(response),
            Err(NotShared::Failed(error)) => Err(error),
        }
    }

    /// Waits for a free renderer; 429 when too many readers already wait. Admission
    /// comes before the snapshot so an answer shows the state when it is rendered.
    pub async fn admit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, ApiError> {
        if let Ok(permit) = self.renderers.try_acquire() {
            return Ok(permit);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= MAX_WAITING {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(ApiError::Busy { retry_after_secs: RETRY_AFTER_SECS });
        }
        let permit = self.renderers.acquire().await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        permit.map_err(|_| ApiError::Internal("the read model is closed".into()))
    }
}

/// An answer that is not shared: a failure, or a rendered answer that is not a 2xx.
enum NotShared {
    Failed(ApiError),
    Answer(Response),
}

fn renderers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::IntoResponse;
    use plinth_scheduler::CoreConfig;
    use std::sync::atomic::AtomicUsize;

    fn empty_core() -> Core {
        Core::new(CoreConfig::default(), Box::new(uuid::Uuid::nil))
    }

    #[tokio::test]
    async fn a_copy_is_taken_once_per_change_and_shared() {
        let model = ReadModel::new(&empty_core());
        let copies = AtomicUsize::new(0);
        let copy = || async {
            copies.fetch_add(1, Ordering::SeqCst);
            empty_core()
        };
        // The first read after start finds the start-up copy current.
        model.snapshot(copy).await;
        assert_eq!(copies.load(Ordering::SeqCst), 0);
        model.bump();
        let first = model.snapshot(copy).await;
        let second = model.snapshot(copy).await;
        assert_eq!(copies.load(Ordering::SeqCst), 1, "one change, one copy");
        assert!(Arc::ptr_eq(&first, &second), "readers share the copy");
        model.bump();
        model.snapshot(copy).await;
        assert_eq!(copies.load(Ordering::SeqCst), 2, "a change after the copy makes it stale");
    }

    #[tokio::test]
    async fn readers_of_one_copy_share_an_answer_until_the_next_change() {
        let model = ReadModel::new(&empty_core());
        let renders = Arc::new(AtomicUsize::new(0));
        let ask = |key: &str, ok: bool| {
            let renders = renders.clone();
            let key = key.to_string();
            let model = &model;
            async move {
                let snapshot = model.snapshot(|| async { empty_core() }).await;
                let response = ReadModel::render_shared(snapshot, key, move |_core| {
                    let n = renders.fetch_add(1, Ordering::SeqCst);
                    if ok {
                        Ok(format!("answer {n}").into_response())
                    } else {
                        Err(ApiError::NotFound("no such thing".into()))
                    }
                })
                .await;
                match response {
                    Ok(r) => {
                        String::from_utf8(axum::body::to_bytes(r.into_body(), 1 << 20).await.expect("body").to_vec())
                            .expect("utf-8")
                    }
                    Err(e) => format!("error {e}"),
                }
            }
        };
        let (first, second) = tokio::join!(ask("apps", true), ask("apps", true));
        assert_eq!((first.as_str(), second.as_str()), ("answer 0", "answer 0"), "one render, two readers");
        assert_eq!(ask("groups", true).await, "answer 1", "another question renders on its own");
        assert_eq!(ask("apps", true).await, "answer 0");
        model.bump();
        assert_eq!(ask("apps", true).await, "answer 2", "a change renders anew");
        assert!(ask("missing", false).await.starts_with("error"));
        assert!(ask("missing", false).await.starts_with("error"));
        assert_eq!(renders.load(Ordering::SeqCst), 5, "errors are rendered for every reader, never shared");
    }

    #[tokio::test]
    async fn readers_past_the_waiting_limit_are_told_to_retry() {
        let model = Arc::new(ReadModel::new(&empty_core()));
        let held: Vec<_> = (0..model.renderers()).map(|_| model.admit()).collect();
        let mut held_permits = Vec::new();
        for permit in held {
            held_permits.push(permit.await.expect("a free renderer"));
        }
        let mut waiters = Vec::new();
        for _ in 0..MAX_WAITING {
            let model = model.clone();
            waiters.push(tokio::spawn(async move { model.admit().await.map(drop).is_ok() }));
        }
        // Let every waiter queue up.
        while model.waiting.load(Ordering::SeqCst) < MAX_WAITING {
            tokio::task::yield_now().await;
        }
        match model.admit().await {
            Err(ApiError::Busy { retry_after_secs }) => assert_eq!(retry_after_secs, RETRY_AFTER_SECS),
            other => panic!("expected Busy, got {:?}", other.map(drop)),
        }
        drop(held_permits);
        for waiter in waiters {
            assert!(waiter.await.expect("waiter"), "a waiting reader is served once renderers free up");
        }
    }
}
