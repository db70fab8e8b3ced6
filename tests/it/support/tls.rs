//! A private certificate authority and a TLS acceptor for poem, so a test receiver can listen on
//! https with a certificate for 127.0.0.1 that only a client given the authority trusts. ring,
//! like Herald, so no second crypto library is built.

use std::sync::Arc;

use poem::http::uri::Scheme;
use poem::listener::Acceptor;
use poem::web::{LocalAddr, RemoteAddr};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

pub struct TestAuthority {
    /// The authority's certificate, for clients that should trust it.
    pub ca_pem: String,
    /// A server configuration with a certificate for `127.0.0.1` signed by the authority.
    pub server: Arc<rustls::ServerConfig>,
}

impl TestAuthority {
    pub fn new() -> Self {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        let key = KeyPair::generate().unwrap();
        let leaf = params.signed_by(&key, &ca).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        Self {
            ca_pem: ca.pem(),
            server: Arc::new(server),
        }
    }
}

/// Wraps an acceptor: each connection is a TLS handshake first; failed handshakes (a client
/// that does not trust the authority) are dropped and the next connection is awaited.
pub struct TlsAcceptor<A> {
    pub inner: A,
    pub tls: tokio_rustls::TlsAcceptor,
}

impl<A: Acceptor> Acceptor for TlsAcceptor<A> {
    type Io = tokio_rustls::server::TlsStream<A::Io>;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.inner.local_addr()
    }

    async fn accept(&mut self) -> std::io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        loop {
            let (io, local, remote, _) = self.inner.accept().await?;
            if let Ok(stream) = self.tls.accept(io).await {
                return Ok((stream, local, remote, Scheme::HTTPS));
            }
        }
    }
}
