//! The master's composition root, the one way it starts: `plinth master` (with PXE
//! provisioning), `plinth standalone` (without) and the in-process tests all go through
//! [`build`], which opens the shared state ([`Master`]) and puts the routers together;
//! [`serve`] and [`run`] add the listeners, the registry server and the ticker.
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;

use crate::error::MasterError;
use crate::pxe::BootConfig;
use crate::shell::{Master, MasterConfig};

/// Opens the master (store, core, registry) and builds its router: the API, plus the boot
/// routes and DHCP/TFTP when `boot` is given, all behind the API's gates (credentials). Nothing listens yet and the core is not
/// ticked: the caller serves the router and usually calls [`Master::spawn_ticker`].
/// `port` is the API's port as clients reach it.
pub async fn build(
    config: MasterConfig,
    port: u16,
    boot: Option<&BootConfig>,
) -> Result<(Arc<Master>, Router), MasterError> {
    let master = Master::open(config, port).await?;
    let mut router = crate::api::router(master.clone());
    if let Some(boot) = boot {
        router = router.merge(crate::pxe::start(&master, boot, port)?);
    }
    let router = crate::api::with_layers(router, &master)
        .layer(axum::middleware::from_fn_with_state(master.clone(), crate::api::follow_leader::follow_leader));
    Ok((master, router))
}

/// Binds `config.listen` and serves until the server fails.
pub async fn run(config: MasterConfig, boot: Option<BootConfig>) -> Result<(), MasterError> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| MasterError::Bind { addr: config.listen, source })?;
    serve(config, boot, listener).await
}

/// Serves the master on an already bound listener: the registry on its own listener,
/// the ticker, and the API (plus the boot routes with `boot`), over HTTPS with `config.tls`
/// or the cluster CA (`config.cluster_ca`, which also asks clients for certificates).
pub async fn serve(
    config: MasterConfig,
    boot: Option<BootConfig>,
    listener: tokio::net::TcpListener,
) -> Result<(), MasterError> {
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(config.listen.port());
    // Bound before the master opens, so a taken port fails early.
    let registry_addr = config.registry.listen;
    let registry_listener = tokio::net::TcpListener::bind(registry_addr)
        .await
        .map_err(|source| MasterError::Bind { addr: registry_addr, source })?;
    let (master, router) = build(config, port, boot.as_ref()).await?;
    spawn_registry_server(&master, registry_listener);
    // A DNS port that cannot be bound is a warning, not a failed master.
    let _dns = plinth_dns::serve(&master.config.dns, master.dns.subscribe()).await;
    master.spawn_ticker();
    if master.etcd.is_some() {
        crate::leader::spawn(&master);
    }
    let tls = master.config.tls.is_some() || master.identity.is_some();
    tracing::info!(listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        framework_id = %master.framework_id, tls, cluster_ca = master.identity.is_some(), "master serving");
    if !tls {
        let service = router.into_make_service_with_connect_info::<SocketAddr>();
        return axum::serve(listener, service).await.map_err(MasterError::Serve);
    }
    let config = crate::tls::server_config(master.config.tls.as_ref(), master.identity.as_deref())?;
    let listener = plinth_oci::tls::TlsListener::new(listener, config).map_err(MasterError::Serve)?;
    // The connection's peer (address and verified client certificate) reaches the
    // handlers as request extensions.
    let service = router
        .layer(axum::middleware::map_request(crate::tls::peer_extensions))
        .into_make_service_with_connect_info::<crate::tls::TlsPeer>();
    axum::serve(listener, service).await.map_err(MasterError::Serve)
}

/// Serves the registry on its listener; a failure there is logged, the API keeps running.
fn spawn_registry_server(master: &Arc<Master>, listener: tokio::net::TcpListener) {
    let registry = master.registry.clone();
    tokio::spawn(async move {
        if let Err(e) = crate::registry::run(registry, listener).await {
            tracing::error!(error = %plinth_protocol::error_chain(&e), "the registry server failed");
        }
    });
}
