//! TLS for every HTTP client in the workspace. reqwest is built with rustls but without
//! a default crypto provider (no aws-lc C build); a client built before a provider is
//! installed panics. Every place that builds a client calls [`install_provider`] first.

/// Makes ring the process's rustls provider. Idempotent and cheap after the first call.
pub fn install_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // An error means another provider was installed first, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
