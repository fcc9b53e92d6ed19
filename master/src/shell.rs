//! The master's shell around the scheduler core: the shared state of a running master
//! ([`Master`]: store + core behind one lock, events, metrics, agent wake-ups, the
//! registry) and the ticker that drives the core. The HTTP side takes this state; it is
//! put together and served in `start.rs`.
//!
//! Every change follows the same path ([`Master::command`]): lock, run the core command,
//! take its changes, read the dirty records back into a batch, hand it to the store's
//! writer thread (`store/writer.rs`) and let go of the lock; the writer commits batches
//! in order, merging those that queued up (group commit), so the next round computes
//! while this one is written. Only once its batch is durable are its events published
//! and its agents woken, and only then does a command answer. A command without changes
//! and an agent's long-poll answer wait for what is queued ([`Master::settled`]): no agent
//! gets state that is not durable. API reads may run up to one write ahead. A failed write ends the
//! process on redb (crash-only: the in-memory core may be ahead of the disk, and a
//! restart restores from the disk); on etcd it fails every later batch and the master
//! steps down.
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{watch, Mutex};

use plinth_protocol::views::events::{LbBackend, LbBackendAdded, LbBackendRemoved, StatusUpdateEvent};
use plinth_protocol::{AgentId, Timestamp};

use crate::access::AccessConfig;
use crate::error::{ApiError, MasterError};
use crate::events::{CallbackHub, EventBus};
use crate::metrics::Metrics;
use crate::read_model::ReadModel;
use crate::registry::{Registry, RegistryConfig};
use crate::role::Role;
use crate::store::writer::{AfterCommit, Ticket, Writer};
use crate::store::{Batch, EtcdSettings, EtcdStore, StateStore, Store, StoreError};
use plinth_scheduler::{Changes, Core, CoreConfig, CoreError, Event};

/// How the master runs (`plinth master` flags).
#[derive(Debug, Clone)]
pub struct MasterConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// An agent silent this long is lost and its tasks are replaced.
    pub agent_timeout: Duration,
    /// How often the core ticks for time-based work ([`TICK_INTERVAL`]); commands that
    /// create work get a round at once regardless.
    pub tick_interval: Duration,
    /// `--service-ports`: the range `servicePort: 0` is assigned from.
    pub service_ports: (u16, u16),
    /// Whether a command that changed something gets a scheduling round at once (the
    /// product always does; a test that scripts an exact sequence of rounds turns it off).
    pub rounds_on_commands: bool,
    /// Join token agents must present (header `x-plinth-token`), when set.
    pub token: Option<plinth_protocol::agent::JoinToken>,
    /// Name this master reports (leader, `/master/state`).
    pub hostname: String,
    /// The image registry (pull-through cache and push target, `:5000`).
    pub registry: RegistryConfig,
    /// Credentials, callback URLs, events' `env` (`access.rs`); the default is an open API.
    pub access: AccessConfig,
    /// Serve the API over HTTPS with this certificate and key.
    pub tls: Option<crate::tls::TlsFiles>,
    /// `--cluster-ca`: agents get certificates from the master's CA and must use them.
    pub cluster_ca: Option<crate::tls::ClusterCaSettings>,
    /// The DNS server (`--dns-*`); off (port 0) unless asked for.
    pub dns: plinth_dns::DnsSettings,
    /// `--etcd`: the state lives in etcd and masters elect a leader (`leader.rs`);
    /// without it, redb in the data dir and this master always leads.
    pub etcd: Option<EtcdSettings>,
    /// TTL of the leader's etcd lease: a leader silent this long is replaced.
    pub leader_lease: Duration,
}

impl Default for MasterConfig {
    fn default() -> Self {
        MasterConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            data_dir: PathBuf::from("/var/lib/plinth/master"),
            agent_timeout: Duration::from_secs(10),
            tick_interval: TICK_INTERVAL,
            service_ports: CoreConfig::default().service_ports,
            rounds_on_commands: true,
            token: None,
            hostname: "localhost".to_string(),
            registry: RegistryConfig::default(),
            access: AccessConfig::default(),
            tls: None,
            cluster_ca: None,
            dns: plinth_dns::DnsSettings::disabled(),
            etcd: None,
            leader_lease: Duration::from_secs(3),
        }
    }
}

/// How often unused registry blobs are collected.
pub const REGISTRY_GC_INTERVAL: Duration = Duration::from_secs(600);

/// How often the core is ticked (offers, supervision, deployments, liveness).
pub const TICK_INTERVAL: Duration = Duration::from_millis(150);

/// The core and its store; one lock so that writes happen in command order.
pub struct Guarded {
    pub core: Core,
    pub store: Arc<dyn StateStore>,
}

/// Shared state of a running master (the axum state).
pub struct Master {
    pub config: MasterConfig,
    state: Mutex<Guarded>,
    /// What big reads render from, so they never hold `state` (`read_model.rs`).
    reads: ReadModel,
    /// When each agent was last heard from, noted on arrival (before the lock).
    heard: std::sync::Mutex<HashMap<AgentId, Timestamp>>,
    /// Written by every command; lets readers skip the lock in the rare cases it matters.
    store: Arc<dyn StateStore>,
    /// Commits the batches of commands and rounds in order, off the lock (group commit).
    writer: Writer,
    /// This master, for what runs after a commit on the writer thread.
    me: Weak<Master>,
    /// Where that work spawns what must await (taking the lock after a failed write).
    runtime: tokio::runtime::Handle,
    /// The etcd store, with `--etcd` (the election campaigns through its client).
    pub etcd: Option<EtcdStore>,
    /// Whether this master leads (always, on redb), and who does otherwise (`leader.rs`).
    pub role: watch::Sender<Role>,
    /// How a core is made afresh (on losing the lead, and on winning it).
    core_config: CoreConfig,
    pub events: EventBus,
    pub callbacks: Arc<CallbackHub>,
    pub metrics: Metrics,
    agent_wakers: std::sync::Mutex<HashMap<AgentId, watch::Sender<u64>>>,
    /// Asks the ticker for a scheduling round now: a command that changed something
    /// (an app posted, scaled or restarted, a task ended, an agent registered) may have
    /// created work, which should not wait for the next [`TICK_INTERVAL`]. `Notify`
    /// keeps one permit, so a burst of commands makes one round, not one per command.
    /// Shared with the ticker, which waits on it without keeping the master alive.
    round_wanted: Arc<tokio::sync::Notify>,
    /// `DELETE /v2/leader` on an etcd leader: the election gives the lead up.
    pub abdication: tokio::sync::Notify,
    /// Addresses already warned about a bad token (logged once each).
    pub token_warned: std::sync::Mutex<std::collections::HashSet<String>>,
    pub framework_id: String,
    pub started_at: Timestamp,
    /// `host:port` clients reach this master at.
    pub leader: String,
    /// `http(s)://host:port`: where other masters send what they proxy to this one.
    pub url: String,
    /// The image registry; served on its own listener (`start.rs`).
    pub registry: Arc<Registry>,
    /// The cluster CA and this master's certificate, with `--cluster-ca`.
    pub identity: Option<Arc<crate::tls::ClusterIdentity>>,
    /// The Mesos-DNS record set, marked stale by [`Master::finish`] and rebuilt in the
    /// background (`dns.rs`).
    pub dns: crate::dns::DnsFeed,
    /// What each live task's start timeline needs beyond its record (`timeline.rs`).
    pub timelines: crate::timeline::Timelines,
}

impl Master {
    /// Opens the store, restores the core and starts the callback workers. The caller
    /// serves [`Master::router`] and usually calls [`Master::spawn_ticker`].
    pub async fn open(config: MasterConfig, port: u16) -> Result<Arc<Master>, MasterError> {
        let (store, etcd): (Arc<dyn StateStore>, Option<EtcdStore>) = match &config.etcd {
            Some(settings) => {
                let etcd = EtcdStore::connect(settings).await?;
                (Arc::new(etcd.clone()), Some(etcd))
            }
            None => {
                let dir = config.data_dir.clone();
                let redb = tokio::task::spawn_blocking(move || Store::open(&dir))
                    .await
                    .expect("store opening does not panic")?;
                (Arc::new(redb), None)
            }
        };
        // With etcd the records are loaded on winning the lead (`leader.rs`), not before.
        let opened = store.clone();
        let leads = etcd.is_none();
        let (snapshot, subscriptions, framework_id) = tokio::task::spawn_blocking(move || {
            let snapshot = if leads { opened.load_checked()? } else { plinth_scheduler::Snapshot::default() };
            Ok::<_, StoreError>((snapshot, opened.subscriptions()?, opened.framework_id()?))
        })
        .await
        .expect("store loading does not panic")?;
        tracing::info!(
            store = %store.describe(), apps = snapshot.apps.len(), tasks = snapshot.tasks.len(),
            agents = snapshot.agents.len(), deployments = snapshot.deployments.len(), "store loaded"
        );
        let core_config = CoreConfig {
            agent_timeout_ms: i64::try_from(config.agent_timeout.as_millis()).unwrap_or(i64::MAX),
            service_ports: config.service_ports,
            ..CoreConfig::default()
        };
        let core = Core::restore(core_config.clone(), crate::ids::random_ids(), snapshot, Timestamp::now());
        let callbacks = Arc::new(CallbackHub::with_policy(config.access.clone()));
        for sub in &subscriptions {
            callbacks.add(&sub.callback_url);
        }
        let events = EventBus::redacting(!config.access.events_include_env);
        callbacks.spawn_dispatcher(&events);
        let leader = format!("{}:{}", config.hostname, port);
        let scheme = if config.tls.is_some() || config.cluster_ca.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{leader}");
        let role = watch::channel(if leads { Role::Single } else { Role::Following(None) }).0;
        // Image names may also use the name this master reports.
        let mut registry_config = config.registry.clone();
        registry_config.aliases.push(format!("{}:{}", config.hostname, config.registry.listen.port()));
        registry_config.push_credentials = config.access.credentials.clone();
        let registry = Registry::open(registry_config, config.data_dir.join("registry"), config.registry.listen)?;
        // The registries the stored apps name stay allowed across restarts.
        for docker in core.apps().filter_map(|app| docker_of(&app.definition)) {
            registry.allow_upstream_of(&docker.image);
        }
        let identity = match &config.cluster_ca {
            Some(settings) => Some(Arc::new(crate::tls::ClusterIdentity::open(
                &config.data_dir,
                &config.hostname,
                config.listen,
                settings,
            )?)),
            None => None,
        };
        let leader_ip = crate::dns::leader_address(config.listen.ip(), &config.hostname);
        let dns = crate::dns::DnsFeed::new(&core, leader_ip.map(|ip| (ip, port)));
        let master = Arc::new_cyclic(|me: &Weak<Master>| Master {
            writer: {
                let me = me.clone();
                Writer::start(store.clone(), move |group| {
                    if let Some(master) = me.upgrade() {
                        master.metrics.record_store_write(group.records, group.elapsed);
                    }
                })
            },
            me: me.clone(),
            runtime: tokio::runtime::Handle::current(),
            config,
            dns,
            reads: ReadModel::new(&core),
            heard: Default::default(),
            state: Mutex::new(Guarded { core, store: store.clone() }),
            store,
            etcd,
            role,
            core_config,
            events,
            callbacks,
            metrics: Metrics::default(),
            agent_wakers: Default::default(),
            round_wanted: Arc::new(tokio::sync::Notify::new()),
            abdication: tokio::sync::Notify::new(),
            token_warned: Default::default(),
            framework_id,
            started_at: Timestamp::now(),
            leader,
            url,
            registry,
            identity,
            timelines: Default::default(),
        });
        master.spawn_registry_tasks();
        master.spawn_dns_builder();
        Ok(master)
    }

    /// Forwards the registry's pull events to the bus and collects unused blobs
    /// periodically, both for as long as the master lives.
    fn spawn_registry_tasks(self: &Arc<Self>) {
        let mut events = self.registry.subscribe();
        let master = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(event) => match master.upgrade() {
                        Some(master) => master.publish(event),
                        None => return,
                    },
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::debug!(skipped = n, "registry events skipped")
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        crate::registry::spawn_gc(&self.registry, REGISTRY_GC_INTERVAL);
    }

    /// Rebuilds the DNS records after each change, off the command lock, for as long as
    /// the master lives (`dns.rs`).
    fn spawn_dns_builder(self: &Arc<Self>) {
        let stale = self.dns.stale();
        let master = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                stale.notified().await;
                let Some(master) = master.upgrade() else { return };
                let snapshot = master.read_copy().await;
                let builder = master.clone();
                match tokio::task::spawn_blocking(move || builder.dns.build(&snapshot.core)).await {
                    Ok(records) => master.dns.publish(records),
                    Err(e) => tracing::error!(error = %e, "building the DNS records failed"),
                }
            }
        });
    }

    /// Starts pulling an app's image in the background (shared with any running pull),
    /// so the layers are here before the first task asks.
    pub fn prefetch_image(&self, definition: &plinth_protocol::marathon::AppDefinition) {
        if let Some(docker) = docker_of(definition) {
            self.registry.prefetch(&docker.image, docker.force_pull_image);
        }
    }

    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.store
    }

    /// The read model's copy of the core (current with every acknowledged write), for
    /// background readers that need no renderer permit (`dns.rs`).
    pub async fn read_copy(&self) -> Arc<crate::read_model::Snapshot> {
        self.reads.snapshot(|| async { self.state.lock().await.core.read_copy() }).await
    }

    /// Read-only access to the live core, under the command lock: for small reads and
    /// read-then-decide paths. Big API reads go through [`Master::render`]. The core may
    /// be up to one write ahead of the disk: what goes to an agent waits for
    /// [`Master::settled`] after the lock is let go.
    pub async fn read(&self) -> tokio::sync::MutexGuard<'_, Guarded> {
        self.state.lock().await
    }

    /// Waits until every change made so far is durable. Every change is handed to the
    /// writer in the same hold of the lock that made it, so after letting go of the lock
    /// this covers whatever was read under it.
    pub async fn settled(&self) {
        self.writer.settled().await;
    }

    /// Renders an answer from the read model (a recent copy of the core, current with
    /// every acknowledged write) without holding the command lock; see `read_model.rs`.
    pub async fn render<R>(&self, render: R) -> Result<axum::response::Response, ApiError>
    where
        R: FnOnce(&Core) -> Result<axum::response::Response, ApiError> + Send + 'static,
    {
        let _permit = self.reads.admit().await?;
        let snapshot = self.reads.snapshot(|| async { self.state.lock().await.core.read_copy() }).await;
        ReadModel::render(snapshot, render).await
    }

    /// [`Master::render`] for big answers many readers ask alike: readers of one copy
    /// asking the same `key` (everything the answer depends on) share one rendering.
    pub async fn render_shared<R>(&self, key: String, render: R) -> Result<axum::response::Response, ApiError>
    where
        R: FnOnce(&Core) -> Result<axum::response::Response, ApiError> + Send + 'static,
    {
        let _permit = self.reads.admit().await?;
        let snapshot = self.reads.snapshot(|| async { self.state.lock().await.core.read_copy() }).await;
        ReadModel::render_shared(snapshot, key, render).await
    }

    /// Notes that an agent was heard from now, before its request waits for the core:
    /// the next tick judges liveness on this time (see [`Core::note_heard`]).
    pub fn heard_from(&self, agent: &AgentId) {
        let mut heard = self.heard.lock().expect("heard-from map is never poisoned");
        heard.insert(agent.clone(), Timestamp::now());
    }

    fn apply_heard(&self, core: &mut Core) {
        let heard = std::mem::take(&mut *self.heard.lock().expect("heard-from map is never poisoned"));
        for (agent, at) in heard {
            core.note_heard(&agent, at);
        }
    }

    /// Runs a core command and makes its effects durable before returning. On `Err`
    /// the core promised to change nothing; any changes it still recorded are persisted
    /// anyway so disk and memory never drift.
    pub async fn command<T>(
        &self,
        run: impl FnOnce(&mut Core, Timestamp) -> Result<T, CoreError>,
    ) -> Result<T, ApiError> {
        self.command_with(|core, now| run(core, now).map_err(ApiError::from)).await
    }

    /// Like [`Master::command`] for closures that also produce non-core errors.
    pub async fn command_with<T>(
        &self,
        run: impl FnOnce(&mut Core, Timestamp) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let mut guard = self.state.lock().await;
        if !self.leads() {
            return Err(crate::role::not_leading(&self.role.borrow()));
        }
        let now = Timestamp::now();
        let result = run(&mut guard.core, now);
        let changes = guard.core.take_changes();
        let changed = !changes.is_empty();
        let ticket = self.submit(&guard.core, changes);
        drop(guard);
        // The round computes while this command's batch is written.
        if changed && self.config.rounds_on_commands {
            self.round_wanted.notify_one();
        }
        match ticket {
            Some(ticket) => ticket.committed().await.map_err(|e| {
                ApiError::Unavailable(format!("the change was not made: {}", plinth_protocol::error_chain(&e)))
            })?,
            // Nothing to write, but what it read may rest on a write still queued.
            None => self.writer.settled().await,
        }
        result
    }

    /// One scheduling round, durable on return.
    pub async fn tick(&self) {
        if let Some(ticket) = self.start_round().await {
            // A failed write has already made this master a follower; nothing else to do.
            let _ = ticket.committed().await;
        }
    }

    /// One scheduling round, its batch handed to the writer but not waited for.
    async fn start_round(&self) -> Option<Ticket> {
        let mut guard = self.state.lock().await;
        if !self.leads() {
            return None;
        }
        self.apply_heard(&mut guard.core);
        let now = Timestamp::now();
        guard.core.tick(now);
        let changes = guard.core.take_changes();
        self.submit(&guard.core, changes)
    }

    /// Hands a command's or round's changes to the writer (the caller holds the lock, so
    /// batches queue in command order). Once durable, the read model is marked stale, events
    /// are published and agents woken ([`Master::made_durable`]); the ticket resolves after.
    fn submit(&self, core: &Core, changes: Changes) -> Option<Ticket> {
        if changes.is_empty() {
            return None;
        }
        let batch = Self::prepare(core, &changes);
        // Needs the core, so here rather than once durable.
        self.timelines.note(core, &changes, Timestamp::now());
        let me = self.me.clone();
        let after: AfterCommit = Box::new(move |written| {
            let Some(master) = me.upgrade() else { return };
            match written {
                Ok(()) => master.made_durable(changes),
                Err(e) => master.write_failed(e),
            }
        });
        Some(self.writer.submit(batch, Some(after)))
    }

    /// What follows a durable write, on the writer thread, in write order.
    fn made_durable(&self, changes: Changes) {
        self.reads.bump();
        self.dns.note(&changes);
        self.publish_all(changes.events);
        self.publish_lb_backends(changes.lb_backends);
        self.notify_agents(changes.notify_agents.iter());
    }

    /// A write failed: on redb the process ends (crash-only); with etcd (deposed, or
    /// etcd unreachable) this master becomes a follower and drops its core, and every
    /// batch after the failed one fails too: nothing of them was acknowledged.
    fn write_failed(&self, error: &StoreError) {
        if self.etcd.is_none() {
            crash("writing changes to the store", error);
        }
        let reason = plinth_protocol::error_chain(error).to_string();
        if self.demote(&reason) {
            let Some(master) = self.me.upgrade() else { return };
            self.runtime.spawn(async move {
                let mut guard = master.state.lock().await;
                // Unless the lead was won again meanwhile.
                if !master.leads() {
                    master.drop_core(&mut guard);
                }
            });
        }
    }

    /// Whether this master may act on the core now (always on redb).
    pub fn leads(&self) -> bool {
        self.role.borrow().leads()
    }

    /// Gives up the lead: the core goes (a later win reloads it from etcd) and requests
    /// are proxied again. `guard` is the command lock, held by the caller.
    pub fn step_down(&self, guard: &mut Guarded, reason: &str) {
        if self.demote(reason) {
            self.drop_core(guard);
        }
    }

    /// Stops acting as leader at once (before any lock): commands waiting for the lock
    /// find a follower. Returns whether this master was leading.
    fn demote(&self, reason: &str) -> bool {
        let was_leading = self.role.send_if_modified(|role| {
            let leading = matches!(role, Role::Leading);
            if leading {
                *role = Role::Following(None);
            }
            leading
        });
        if was_leading {
            tracing::warn!(reason, "no longer the leader");
            self.metrics.record_leader_change();
            self.publish(crate::role::leader_event("leader_abdicated", &self.url));
        }
        was_leading
    }

    fn drop_core(&self, guard: &mut Guarded) {
        guard.core = Core::new(self.core_config.clone(), crate::ids::random_ids());
        self.reads.bump();
    }

    /// Takes the lead: loads every record from etcd (replaying a journal a crash left),
    /// restores the core from them and starts acting. Called by the election with its fence set.
    pub async fn take_lead(&self) -> Result<(), StoreError> {
        let mut guard = self.state.lock().await;
        // Batches of an earlier lead resolve (or fail) first; this lead's are written again.
        self.writer.settled().await;
        self.writer.reset();
        let store = self.store.clone();
        let started = std::time::Instant::now();
        let (snapshot, subscriptions) =
            tokio::task::spawn_blocking(move || Ok::<_, StoreError>((store.load_checked()?, store.subscriptions()?)))
                .await
                .expect("store loading does not panic")?;
        tracing::info!(
            apps = snapshot.apps.len(),
            tasks = snapshot.tasks.len(),
            agents = snapshot.agents.len(),
            load_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "elected leader: state loaded"
        );
        guard.core = Core::restore(self.core_config.clone(), crate::ids::random_ids(), snapshot, Timestamp::now());
        // As at a redb master's start: the registries the stored apps name stay allowed.
        for docker in guard.core.apps().filter_map(|app| docker_of(&app.definition)) {
            self.registry.allow_upstream_of(&docker.image);
        }
        for sub in &subscriptions {
            self.callbacks.add(&sub.callback_url);
        }
        self.role.send_replace(Role::Leading);
        self.metrics.record_leader_change();
        self.reads.bump();
        drop(guard);
        self.publish(crate::role::leader_event("leader_elected", &self.url));
        self.round_wanted.notify_one();
        Ok(())
    }

    /// [`Master::step_down`] taking the lock itself (the election lost its lease).
    pub async fn lose_lead(&self, reason: &str) {
        if self.demote(reason) {
            let mut guard = self.state.lock().await;
            // Unless the lead was won again meanwhile.
            if !self.leads() {
                self.drop_core(&mut guard);
            }
        }
    }

    /// `lb_backend_added` / `lb_backend_removed` (Plinth's own: `/v1/events` only).
    fn publish_lb_backends(&self, backends: Vec<(bool, LbBackend)>) {
        if backends.is_empty() {
            return;
        }
        let now = Timestamp::now();
        for (added, backend) in backends {
            let event = if added {
                Event::of(now, &LbBackendAdded(backend))
            } else {
                Event::of(now, &LbBackendRemoved(backend))
            };
            self.publish(event);
        }
    }

    /// Ticks the core every [`TICK_INTERVAL`] (time-based work: backoffs, timeouts,
    /// health deadlines) and at once when a command asks for a round, for as long as the
    /// master lives.
    pub fn spawn_ticker(self: &Arc<Self>) {
        let master = Arc::downgrade(self);
        tokio::spawn(async move {
            let Some((period, round_wanted)) =
                master.upgrade().map(|m| (m.config.tick_interval, m.round_wanted.clone()))
            else {
                return;
            };
            let mut interval = tokio::time::interval(period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The previous round's write: the next round computes while it is under way,
            // but waits for it before starting another (at most one round ahead of the disk).
            let mut writing: Option<Ticket> = None;
            loop {
                // Only a weak reference while waiting: a dropped master closes its store at once.
                tokio::select! {
                    _ = interval.tick() => {}
                    () = round_wanted.notified() => {}
                }
                let Some(master) = master.upgrade() else { return };
                let started = master.start_round().await;
                master.metrics.record_round();
                drop(master);
                if let Some(previous) = std::mem::replace(&mut writing, started) {
                    let _ = previous.committed().await;
                }
            }
        });
    }

    /// Reads the dirty records back from the core (synchronously: the core is not `Sync`,
    /// so no reference to it may live across an await).
    fn prepare(core: &Core, changes: &Changes) -> Batch {
        match Batch::of(core, changes) {
            Ok(batch) => batch,
            Err(e) => crash("encoding changes for the store", &e),
        }
    }

    pub fn publish_all(&self, events: Vec<Event>) {
        for event in events {
            log_event(&event);
            self.events.publish(event);
        }
    }

    pub fn publish(&self, event: Event) {
        self.events.publish(event);
    }

    /// The long-poll wake-up channel of one agent.
    pub fn agent_waker(&self, agent: &AgentId) -> watch::Receiver<u64> {
        let mut wakers = self.agent_wakers.lock().expect("agent waker map is never poisoned");
        wakers.entry(agent.clone()).or_insert_with(|| watch::channel(0).0).subscribe()
    }

    fn notify_agents<'a>(&self, agents: impl Iterator<Item = &'a AgentId>) {
        let mut wakers = self.agent_wakers.lock().expect("agent waker map is never poisoned");
        for agent in agents {
            wakers.entry(agent.clone()).or_insert_with(|| watch::channel(0).0).send_modify(|n| *n += 1);
        }
    }
}

/// An app's Docker image settings, when it runs one.
fn docker_of(
    definition: &plinth_protocol::marathon::AppDefinition,
) -> Option<&plinth_protocol::marathon::DockerContainer> {
    definition.container.as_ref().and_then(|c| c.docker.as_ref())
}

/// Operators follow tasks and deployments in the log; other events stay at debug.
fn log_event(event: &Event) {
    // From the typed body: logging a status builds no JSON.
    if let Some(status) = event.payload.body::<StatusUpdateEvent>() {
        tracing::info!(
            app_id = %status.app_id, task_id = %status.task_id, node_id = %status.slave_id,
            state = %status.task_status, message = %status.message, "task status"
        );
        return;
    }
    let p = &event.payload;
    let field = |name: &str| p.get(name).and_then(|v| v.as_str()).unwrap_or("");
    match event.event_type.as_str() {
        "status_update_event" => tracing::info!(
            app_id = %field("appId"), task_id = %field("taskId"), node_id = %field("slaveId"),
            state = %field("taskStatus"), message = %field("message"), "task status"
        ),
        "deployment_success" | "deployment_failed" | "deployment_info" => tracing::info!(
            deployment_id = %p.pointer("/plan/id").and_then(|v| v.as_str()).or_else(|| p.get("id").and_then(|v| v.as_str())).unwrap_or(""),
            event_type = %event.event_type, "deployment"
        ),
        other => tracing::debug!(event_type = other, "event"),
    }
}

/// Crash-only: the in-memory core is now ahead of the disk; only a restart from the
/// disk is consistent again.
fn crash(operation: &str, error: &dyn std::error::Error) -> ! {
    let chain = plinth_protocol::error_chain(error);
    tracing::error!(error = %chain, "{operation} failed; exiting so a restart recovers from the store");
    eprintln!("plinth master: {operation} failed: {chain}; exiting");
    std::process::exit(70);
}
