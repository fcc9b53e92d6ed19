//! Group commit: one thread writes the master's batches, in the order they were handed
//! over, while the core goes on computing. A caller hands a [`Batch`] over
//! ([`Writer::submit`]) and gets a [`Ticket`] that resolves once that batch is durable;
//! batches that queued up while a write was under way are merged into one transaction,
//! so one fsync (or one etcd round trip) covers several rounds and commands.
//!
//! What follows a commit (publishing events, waking agents) runs on this thread, batch
//! by batch in order, before the batch's ticket resolves. A failed write fails its batch
//! and every batch after it (each was computed on top of the failed one) until
//! [`Writer::reset`]: nothing after a failure is written or acknowledged.
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use super::{Batch, StateStore, StoreError};

/// At most this many batches go into one transaction.
const MAX_GROUP: usize = 64;

/// Runs after its batch's commit (or failure), on the writer thread, in batch order.
pub type AfterCommit = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;

/// One transaction the writer made: how many batches and records it held, how long it took.
#[derive(Debug, Clone, Copy)]
pub struct GroupStats {
    pub batches: usize,
    pub records: usize,
    pub elapsed: Duration,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum CommitError {
    #[error("the store write failed")]
    Failed(#[source] Arc<StoreError>),
    #[error("the store writer has stopped")]
    Stopped,
}

/// Resolves once its batch is durable (or known not to be).
#[derive(Debug)]
pub struct Ticket(oneshot::Receiver<Result<(), CommitError>>);

impl Ticket {
    pub async fn committed(self) -> Result<(), CommitError> {
        self.0.await.unwrap_or(Err(CommitError::Stopped))
    }
    /// [`Ticket::committed`] for threads outside an async runtime.
    pub fn wait(self) -> Result<(), CommitError> {
        self.0.blocking_recv().unwrap_or(Err(CommitError::Stopped))
    }
}

struct Job {
    seq: u64,
    batch: Batch,
    after: Option<AfterCommit>,
    done: oneshot::Sender<Result<(), CommitError>>,
}

enum Message {
    Job(Job),
    /// Clears a failure: batches handed over after this are written again.
    Reset,
}

struct Queue {
    sender: Option<mpsc::Sender<Message>>,
    submitted: u64,
}

/// The writer thread and its queue. Dropping it writes what is queued, then stops
/// the thread (and so lets go of the store).
pub struct Writer {
    queue: Mutex<Queue>,
    /// The sequence number of the last batch whose ticket resolved.
    finished: watch::Sender<u64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").field("finished", &*self.finished.borrow()).finish()
    }
}

impl Writer {
    /// Starts the writer thread; `observe` sees every transaction it makes.
    pub fn start(store: Arc<dyn StateStore>, observe: impl Fn(GroupStats) + Send + 'static) -> Writer {
        let (sender, receiver) = mpsc::channel();
        let finished = watch::channel(0).0;
        let progress = finished.clone();
        let thread = std::thread::Builder::new()
            .name("plinth-store-writer".into())
            .spawn(move || run(&*store, &receiver, &progress, &observe))
            .expect("a thread can be started");
        Writer { queue: Mutex::new(Queue { sender: Some(sender), submitted: 0 }), finished, thread: Some(thread) }
    }

    /// Hands a batch over; `after` runs once it is durable (or failed), before the ticket resolves.
    pub fn submit(&self, batch: Batch, after: Option<AfterCommit>) -> Ticket {
        let (done, ticket) = oneshot::channel();
        let mut queue = self.queue.lock().expect("the writer queue is never poisoned");
        queue.submitted += 1;
        let job = Job { seq: queue.submitted, batch, after, done };
        if let Some(sender) = &queue.sender {
            // A send fails only once the thread is gone: the ticket then says `Stopped`.
            let _ = sender.send(Message::Job(job));
        }
        Ticket(ticket)
    }

    /// Waits until every batch handed over before this call has resolved.
    pub async fn settled(&self) {
        let target = self.queue.lock().expect("the writer queue is never poisoned").submitted;
        let mut finished = self.finished.subscribe();
        // An error means the thread is gone: nothing more will resolve.
        let _ = finished.wait_for(|done| *done >= target).await;
    }

    /// Whether every batch handed over so far has resolved.
    pub fn is_settled(&self) -> bool {
        let target = self.queue.lock().expect("the writer queue is never poisoned").submitted;
        *self.finished.borrow() >= target
    }

    /// Writes batches handed over from now on again after a failure.
    pub fn reset(&self) {
        let queue = self.queue.lock().expect("the writer queue is never poisoned");
        if let Some(sender) = &queue.sender {
            let _ = sender.send(Message::Reset);
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.queue.lock().map(|mut q| q.sender.take()).ok();
        if let Some(thread) = self.thread.take() {
            // Dropped by work running on the writer thread itself: it stops on its own.
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

fn run(
    store: &dyn StateStore,
    receiver: &mpsc::Receiver<Message>,
    finished: &watch::Sender<u64>,
    observe: &dyn Fn(GroupStats),
) {
    let mut failed: Option<Arc<StoreError>> = None;
    let mut pending: Option<Message> = None;
    loop {
        let first = match pending.take() {
            Some(message) => message,
            None => match receiver.recv() {
                Ok(message) => message,
                Err(_) => return,
            },
        };
        let first = match first {
            Message::Reset => {
                failed = None;
                continue;
            }
            Message::Job(job) => job,
        };
        // Whatever queued up meanwhile joins this transaction (up to a reset).
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match receiver.try_recv() {
                Ok(Message::Job(job)) => group.push(job),
                Ok(reset) => {
                    pending = Some(reset);
                    break;
                }
                Err(_) => break,
            }
        }
        let result = match &failed {
            Some(error) => Err(error.clone()),
            None => {
                let started = Instant::now();
                let records = group.iter().map(|job| job.batch.len()).sum();
                let written = if group.len() == 1 {
                    store.commit(&group[0].batch)
                } else {
                    let mut merged = Batch::default();
                    for job in &mut group {
                        merged.append(std::mem::take(&mut job.batch));
                    }
                    store.commit(&merged)
                };
                match written {
                    Ok(()) => {
                        observe(GroupStats { batches: group.len(), records, elapsed: started.elapsed() });
                        Ok(())
                    }
                    Err(error) => {
                        let error = Arc::new(error);
                        failed = Some(error.clone());
                        Err(error)
                    }
                }
            }
        };
        for job in group {
            if let Some(after) = job.after {
                after(result.as_ref().map(|_| ()).map_err(|e| &**e));
            }
            let _ = job.done.send(result.clone().map_err(CommitError::Failed));
            finished.send_replace(job.seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, Subscription};
    use plinth_scheduler::Snapshot;

    /// A store that records what it commits and fails the commits it is told to.
    #[derive(Debug, Default)]
    struct Recording {
        commits: Mutex<Vec<Vec<String>>>,
        fail_when_key: Mutex<Option<String>>,
        /// Held by the test to keep the writer busy while batches queue up.
        gate: Mutex<()>,
        entered: std::sync::atomic::AtomicUsize,
    }

    impl StateStore for Recording {
        fn kind(&self) -> &'static str {
            "recording"
        }
        fn describe(&self) -> String {
            String::new()
        }
        fn framework_id(&self) -> Result<String, StoreError> {
            Ok(String::new())
        }
        fn load_checked(&self) -> Result<Snapshot, StoreError> {
            Ok(Snapshot::default())
        }
        fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
            self.entered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _gate = self.gate.lock().unwrap();
            let keys: Vec<String> = batch.puts().iter().map(|(_, key, _)| key.clone()).collect();
            if let Some(bad) = &*self.fail_when_key.lock().unwrap() {
                if keys.contains(bad) {
                    return Err(StoreError::Deposed);
                }
            }
            self.commits.lock().unwrap().push(keys);
            Ok(())
        }
        fn subscriptions(&self) -> Result<Vec<Subscription>, StoreError> {
            Ok(vec![])
        }
        fn put_subscription(&self, _: &Subscription) -> Result<(), StoreError> {
            Ok(())
        }
        fn delete_subscription(&self, _: &str) -> Result<bool, StoreError> {
            Ok(false)
        }
    }

    fn batch(key: &str) -> Batch {
        let mut batch = Batch::default();
        batch.put("apps", key, Some(b"{}".to_vec()));
        batch
    }

    #[test]
    fn batches_queued_during_a_write_share_one_transaction_and_resolve_in_order() {
        let store = Arc::new(Recording::default());
        let writer = Writer::start(store.clone(), |_| {});
        let order = Arc::new(Mutex::new(Vec::new()));
        let after = |name: &'static str| -> Option<AfterCommit> {
            let order = order.clone();
            Some(Box::new(move |result| {
                assert!(result.is_ok());
                order.lock().unwrap().push(name);
            }))
        };
        let gate = store.gate.lock().unwrap();
        let first = writer.submit(batch("a"), after("a"));
        // Wait until the writer is inside the first commit (blocked on the gate).
        while store.entered.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        let queued: Vec<Ticket> = ["b", "c", "d"].into_iter().map(|k| writer.submit(batch(k), after(k))).collect();
        assert!(!writer.is_settled());
        drop(gate);
        first.wait().unwrap();
        for ticket in queued {
            ticket.wait().unwrap();
        }
        assert!(writer.is_settled());
        assert_eq!(*order.lock().unwrap(), ["a", "b", "c", "d"]);
        let commits = store.commits.lock().unwrap().clone();
        assert_eq!(commits, vec![vec!["a".to_string()], vec!["b".into(), "c".into(), "d".into()]]);
    }

    #[test]
    fn a_failed_write_fails_every_later_batch_unwritten_until_reset() {
        let store = Arc::new(Recording::default());
        *store.fail_when_key.lock().unwrap() = Some("bad".into());
        let writer = Writer::start(store.clone(), |_| {});
        writer.submit(batch("ok"), None).wait().unwrap();
        let failed = writer.submit(batch("bad"), None).wait();
        assert!(matches!(failed, Err(CommitError::Failed(ref e)) if matches!(**e, StoreError::Deposed)), "{failed:?}");
        let after_failure = writer.submit(batch("later"), None).wait();
        assert!(after_failure.is_err(), "a batch computed on top of a failed one is not acknowledged");
        writer.reset();
        writer.submit(batch("again"), None).wait().unwrap();
        let commits = store.commits.lock().unwrap().clone();
        assert_eq!(commits, vec![vec!["ok".to_string()], vec!["again".to_string()]], "'later' was never written");
    }

    #[test]
    fn merged_batches_keep_their_order_and_a_later_drop_of_versions_covers_earlier_writes() {
        let mut first = Batch::default();
        first.put("app_versions", "/a\0v1", Some(b"1".to_vec()));
        first.put("app_versions", "/ab\0v1", Some(b"1".to_vec()));
        first.put("apps", "/a", Some(b"1".to_vec()));
        let mut later = Batch::default();
        later.drop_versions_of.push("/a".into());
        later.put("apps", "/a", None);
        first.append(later);
        let keys: Vec<(&str, &str, bool)> =
            first.puts().iter().map(|(t, k, v)| (*t, k.as_str(), v.is_some())).collect();
        assert_eq!(keys, [("app_versions", "/ab\0v1", true), ("apps", "/a", true), ("apps", "/a", false)]);
        assert_eq!(first.dropped_versions(), ["/a".to_string()]);
    }

    #[test]
    fn dropping_the_writer_writes_what_is_queued_and_lets_go_of_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let writer = Writer::start(Arc::new(store), |_| {});
        let tickets: Vec<Ticket> = (0..20)
            .map(|n| {
                let sub = Subscription {
                    callback_url: format!("http://127.0.0.1:9/{n}"),
                    client_ip: None,
                    created_at: "x".into(),
                };
                let mut batch = Batch::default();
                let value = crate::store::encode("event_subscriptions", &sub.callback_url, &sub).unwrap();
                batch.put("event_subscriptions", sub.callback_url, Some(value));
                writer.submit(batch, None)
            })
            .collect();
        drop(writer);
        for ticket in tickets {
            ticket.wait().unwrap();
        }
        // The database is closed: it opens again at once (redb refuses a second opener).
        let reopened = Store::open(dir.path()).unwrap();
        assert_eq!(reopened.subscriptions().unwrap().len(), 20);
    }
}
