//! HTTPS for the local stack's function URLs, as AWS serves them: a
//! self-signed certificate for 127.0.0.1 and localhost, checked in under
//! `local/tls/` (local use only; clients trust [`CERT_PEM`]). Unsubscribe
//! links (RFC 8058 wants an HTTPS URI) point at the links function's HTTPS
//! front.

use anyhow::{Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// The local certificate (PEM), for clients to trust.
pub const CERT_PEM: &[u8] = include_bytes!("../tls/localhost.crt");
const KEY_PEM: &[u8] = include_bytes!("../tls/localhost.key");

/// The acceptor for the local certificate.
pub fn acceptor() -> Result<TlsAcceptor> {
    let certs = CertificateDer::pem_slice_iter(CERT_PEM)
        .collect::<Result<Vec<_>, _>>()
        .context("local/tls/localhost.crt")?;
    let key = PrivateKeyDer::from_pem_slice(KEY_PEM).context("local/tls/localhost.key")?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A TCP listener that completes a TLS handshake per connection (a failed
/// one is dropped, as a server drops it).
pub struct TlsListener {
    inner: TcpListener,
    acceptor: TlsAcceptor,
}

impl TlsListener {
    /// Wraps a bound listener.
    pub fn new(inner: TcpListener) -> Result<Self> {
        Ok(Self {
            inner,
            acceptor: acceptor()?,
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.inner.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let handshake = self.acceptor.accept(stream);
            if let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(5), handshake).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}
