//! Reading the whole state out of etcd fast, for a new leader's load (`EtcdStore::load_async`).
//! Every request is pinned to one revision, that of the first (one point of etcd's
//! history, however many requests the read takes). The prefix is cut into one range per
//! key space and the gaps between them (where a foreign key would show); a range with
//! more than [`PAGE`] keys is listed keys-only and cut into ranges of [`PAGE`] keys, each
//! then one bounded request. [`IN_FLIGHT`] requests run at once. Pages are checksummed
//! and decoded as they arrive by one worker per core on the blocking pool, so decoding
//! overlaps the reads and stays off the async threads.
use std::collections::BTreeMap;
use std::sync::{mpsc, Arc, Mutex};

use etcd_client::{GetOptions, GetResponse, KeyValue, KvClient};
use futures::future::try_join_all;
use tokio::sync::Semaphore;

use plinth_scheduler::Snapshot;

use super::{decode_rows, StoreError, RECORD_TABLES, SUBSCRIPTIONS_TABLE};

/// Keys per value request: etcd 3.4 walks a request's whole range in its index whatever
/// its limit, so a big table is cut into bounded ranges of this many keys.
pub(super) const PAGE: usize = 2_000;
/// Keys per keys-only listing request.
const KEYS_PAGE: usize = 100_000;
/// Requests in flight at once.
const IN_FLIGHT: usize = 8;
/// gRPC status codes (numbers fixed by the gRPC spec) of an answer over the client's
/// decoding limit: the request is repeated for half as many keys.
const OUT_OF_RANGE: i32 = 11;
const RESOURCE_EXHAUSTED: i32 = 8;
const OP: &str = "loading the snapshot";

/// What a key space under the prefix holds, as the load sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Space {
    /// One of [`RECORD_TABLES`]: read and decoded.
    Table(&'static str),
    /// Big batches' journals: read first; any found make the load replay them.
    Journal,
    /// The schema, the framework id, the election, subscriptions: not part of the snapshot.
    Ignored,
    /// Between the spaces: any key here is not Plinth's.
    Gap,
}

/// A range of keys `[start, end)` of one space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Range {
    pub space: Space,
    pub start: Vec<u8>,
    pub end: Vec<u8>,
}

/// Keys read from one range, in key order (never empty).
pub(super) struct Page {
    pub space: Space,
    pub kvs: Vec<KeyValue>,
}

/// The first key after every key starting with `prefix` (etcd's range end of a prefix).
pub(super) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The first key after `key`.
fn after(key: &[u8]) -> Vec<u8> {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    next
}

/// Ranges covering every key under `root` (`{prefix}/`) once, in key order.
pub(super) fn ranges(root: &[u8]) -> Vec<Range> {
    let mut spaces: Vec<(Vec<u8>, Space)> =
        RECORD_TABLES.iter().map(|t| (t.as_bytes().to_vec(), Space::Table(t))).collect();
    spaces.push((b"journal".to_vec(), Space::Journal));
    for ignored in ["meta", "leader", SUBSCRIPTIONS_TABLE] {
        spaces.push((ignored.as_bytes().to_vec(), Space::Ignored));
    }
    let mut named: Vec<Range> = spaces
        .into_iter()
        .map(|(name, space)| {
            let mut start = root.to_vec();
            start.extend_from_slice(&name);
            start.push(b'/');
            let end = prefix_end(&start);
            Range { space, start, end }
        })
        .collect();
    named.sort_by(|a, b| a.start.cmp(&b.start));
    let mut out = Vec::new();
    let mut cursor = root.to_vec();
    for range in named {
        if cursor < range.start {
            out.push(Range { space: Space::Gap, start: cursor, end: range.start.clone() });
        }
        cursor = range.end.clone();
        out.push(range);
    }
    let end = prefix_end(root);
    if cursor < end {
        out.push(Range { space: Space::Gap, start: cursor, end });
    }
    out
}

fn too_big(error: &etcd_client::Error) -> bool {
    matches!(error, etcd_client::Error::GRpcStatus(status)
        if matches!(i32::from(status.code()), OUT_OF_RANGE | RESOURCE_EXHAUSTED))
}

fn etcd_err(source: etcd_client::Error) -> StoreError {
    StoreError::Etcd { operation: OP, source }
}

/// Reads of one load: all at one revision, at most [`IN_FLIGHT`] at once.
pub(super) struct Reader {
    kv: KvClient,
    revision: i64,
    permits: Semaphore,
}

impl Reader {
    /// A linearizable count of `range` (cheap: etcd's index only) fixes the revision every
    /// later read is pinned to; returns the reader and that count.
    pub async fn pinned_at_count_of(kv: KvClient, range: &Range) -> Result<(Reader, i64), StoreError> {
        let options = GetOptions::new().with_range(range.end.clone()).with_count_only();
        let answer = kv.clone().get(range.start.clone(), Some(options)).await.map_err(etcd_err)?;
        let revision = answer.header().map(|h| h.revision()).unwrap_or(0);
        let reader = Reader { kv, revision, permits: Semaphore::new(IN_FLIGHT) };
        Ok((reader, answer.count()))
    }

    pub fn revision(&self) -> i64 {
        self.revision
    }

    async fn get(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        keys_only: bool,
    ) -> Result<GetResponse, etcd_client::Error> {
        let _permit = self.permits.acquire().await.expect("the load's semaphore is never closed");
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut options = GetOptions::new().with_range(end.to_vec()).with_limit(limit);
        if self.revision > 0 {
            options = options.with_revision(self.revision);
        }
        if keys_only {
            options = options.with_keys_only();
        }
        self.kv.clone().get(start.to_vec(), Some(options)).await
    }

    /// [`Reader::get`], asked again for half as many keys while the answer is over the
    /// client's decoding limit; `limit` keeps the size that fit for the next pages.
    async fn get_fitting(
        &self,
        start: &[u8],
        end: &[u8],
        limit: &mut usize,
        keys_only: bool,
    ) -> Result<GetResponse, StoreError> {
        loop {
            match self.get(start, end, *limit, keys_only).await {
                Err(e) if too_big(&e) && *limit > 1 => *limit /= 2,
                answer => return answer.map_err(etcd_err),
            }
        }
    }

    /// Every key of `ranges` with its value, handed to `sink` page by page as they arrive.
    pub async fn read(&self, ranges: &[Range], sink: &(dyn Fn(Page) + Sync)) -> Result<(), StoreError> {
        try_join_all(ranges.iter().map(|range| self.read_range(range, sink))).await.map(drop)
    }

    async fn read_range(&self, range: &Range, sink: &(dyn Fn(Page) + Sync)) -> Result<(), StoreError> {
        let Some((rest, left)) = self.read_pages(range.space, range.start.clone(), &range.end, Some(1), sink).await?
        else {
            return Ok(());
        };
        if usize::try_from(left).unwrap_or(usize::MAX) <= PAGE {
            return self.read_pages(range.space, rest, &range.end, None, sink).await.map(drop);
        }
        // Cut at listed keys: at one revision the keys of each cut are exactly those listed.
        let keys = self.list_keys(rest, &range.end).await?;
        let cuts: Vec<(Vec<u8>, Vec<u8>)> = keys
            .chunks(PAGE)
            .enumerate()
            .map(|(n, chunk)| {
                let end = keys.get((n + 1) * PAGE).cloned().unwrap_or_else(|| range.end.clone());
                (chunk[0].clone(), end)
            })
            .collect();
        try_join_all(
            cuts.into_iter()
                .map(|(start, end)| async move { self.read_pages(range.space, start, &end, None, sink).await }),
        )
        .await
        .map(drop)
    }

    /// Reads `[start, end)` page after page (at most `pages`); returns where the rest
    /// starts and how many keys it holds, if any is left.
    async fn read_pages(
        &self,
        space: Space,
        mut start: Vec<u8>,
        end: &[u8],
        pages: Option<usize>,
        sink: &(dyn Fn(Page) + Sync),
    ) -> Result<Option<(Vec<u8>, i64)>, StoreError> {
        let mut limit = PAGE;
        let mut read = 0;
        loop {
            let mut answer = self.get_fitting(&start, end, &mut limit, false).await?;
            let (more, count) = (answer.more(), answer.count());
            let kvs = answer.take_kvs();
            let Some(last) = kvs.last() else { return Ok(None) };
            let next = after(last.key());
            let got = i64::try_from(kvs.len()).unwrap_or(i64::MAX);
            sink(Page { space, kvs });
            if !more {
                return Ok(None);
            }
            start = next;
            read += 1;
            if pages.is_some_and(|pages| read >= pages) {
                return Ok(Some((start, count - got)));
            }
        }
    }

    /// The keys of `[start, end)`, in order.
    async fn list_keys(&self, mut start: Vec<u8>, end: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut keys = Vec::new();
        let mut limit = KEYS_PAGE;
        loop {
            let mut answer = self.get_fitting(&start, end, &mut limit, true).await?;
            let more = answer.more();
            keys.extend(answer.take_kvs().into_iter().map(|kv| kv.into_key_value().0));
            match keys.last() {
                Some(last) if more => start = after(last),
                _ => return Ok(keys),
            }
        }
    }
}

fn key_text(key: &[u8]) -> Result<&str, StoreError> {
    std::str::from_utf8(key).map_err(|_| StoreError::Foreign {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: "the key is not UTF-8".into(),
    })
}

/// A page's records; `root_len` is the length of `{prefix}/`.
fn decode_page(page: &Page, root_len: usize) -> Result<Snapshot, StoreError> {
    let mut part = Snapshot::default();
    match page.space {
        Space::Table(table) => {
            let skip = root_len + table.len() + 1;
            let rows: Vec<(&str, &[u8])> =
                page.kvs.iter().map(|kv| Ok((key_text(&kv.key()[skip..])?, kv.value()))).collect::<Result<_, _>>()?;
            decode_rows(table, rows, &mut part)?;
        }
        Space::Gap => {
            let key = key_text(page.kvs[0].key())?;
            let space = key[root_len..].split('/').next().unwrap_or_default();
            return Err(StoreError::Foreign {
                key: key.to_string(),
                reason: format!("'{space}' is not a table of Plinth's"),
            });
        }
        Space::Journal | Space::Ignored => {}
    }
    Ok(part)
}

fn append(into: &mut Snapshot, part: Snapshot) {
    into.apps.extend(part.apps);
    into.app_versions.extend(part.app_versions);
    into.tasks.extend(part.tasks);
    into.agents.extend(part.agents);
    into.deployments.extend(part.deployments);
    into.groups.extend(part.groups);
}

/// Reads `ranges` and decodes their records as the pages arrive, on one blocking worker
/// per core; the snapshot holds each table's records in key order, as a sequential load.
pub(super) async fn read_decoded(reader: &Reader, ranges: &[Range], root_len: usize) -> Result<Snapshot, StoreError> {
    let (pages, queue) = mpsc::channel::<Page>();
    let queue = Arc::new(Mutex::new(queue));
    let workers = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    let decoders: Vec<_> = (0..workers)
        .map(|_| {
            let queue = queue.clone();
            tokio::task::spawn_blocking(move || {
                let mut decoded = Vec::new();
                loop {
                    let next = queue.lock().expect("the page queue's lock is never poisoned").recv();
                    let Ok(page) = next else { return decoded };
                    let first = page.kvs[0].key().to_vec();
                    decoded.push((first, decode_page(&page, root_len)));
                }
            })
        })
        .collect();
    let read = reader
        .read(ranges, &|page| {
            // A send fails only when every decoder is gone, which happens only after this.
            let _ = pages.send(page);
        })
        .await;
    drop(pages);
    let mut parts = Vec::new();
    for decoder in decoders {
        parts.extend(decoder.await.expect("decoding a page does not panic"));
    }
    read?;
    // Pages never overlap: their first keys order them, and the first error in key order is the one told.
    parts.sort_by(|a, b| a.0.cmp(&b.0));
    let mut snapshot = Snapshot::default();
    for (_, part) in parts {
        append(&mut snapshot, part?);
    }
    Ok(snapshot)
}

/// Reads `ranges` as raw rows (keys below `{prefix}/`), for a load that has journals to replay.
pub(super) async fn read_rows(
    reader: &Reader,
    ranges: &[Range],
    root_len: usize,
) -> Result<BTreeMap<String, Vec<u8>>, StoreError> {
    let pages = Mutex::new(Vec::new());
    reader.read(ranges, &|page| pages.lock().expect("the page list's lock is never poisoned").push(page)).await?;
    let mut rows = BTreeMap::new();
    for page in pages.into_inner().expect("the page list's lock is never poisoned") {
        for kv in page.kvs {
            let (key, value) = kv.into_key_value();
            rows.insert(key_text(&key[root_len..])?.to_string(), value);
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_the_prefix_once_in_order() {
        let root = b"/plinth/";
        let ranges = ranges(root);
        assert_eq!(ranges.first().map(|r| r.start.as_slice()), Some(&root[..]));
        assert_eq!(ranges.last().map(|r| r.end.clone()), Some(prefix_end(root)));
        for pair in ranges.windows(2) {
            assert_eq!(pair[0].end, pair[1].start, "{pair:?}");
            assert!(pair[0].start < pair[0].end);
        }
        let space_of =
            |key: &[u8]| ranges.iter().find(|r| r.start.as_slice() <= key && key < r.end.as_slice()).map(|r| r.space);
        assert_eq!(space_of(b"/plinth/apps/x"), Some(Space::Table("apps")));
        assert_eq!(space_of(b"/plinth/app_versions/x\0v"), Some(Space::Table("app_versions")));
        assert_eq!(space_of(b"/plinth/tasks/"), Some(Space::Table("tasks")));
        assert_eq!(space_of(b"/plinth/journal/1/000001"), Some(Space::Journal));
        assert_eq!(space_of(b"/plinth/leader/694d7b"), Some(Space::Ignored));
        assert_eq!(space_of(b"/plinth/apps"), Some(Space::Gap));
        assert_eq!(space_of(b"/plinth/appsx/y"), Some(Space::Gap));
        assert_eq!(space_of(b"/plinth/zzz"), Some(Space::Gap));
        assert_eq!(space_of(b"/plinth0"), None);
    }
}
