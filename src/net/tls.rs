//! TLS with rustls: pgmux's server side for clients (`client_tls_*`) and its client side for
//! servers (`server_tls_*`), with libpq's sslmode semantics. After the handshake the
//! connection runs inline on its socket ([`super::inline`]).

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use crate::config::{General, SslMode};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Why TLS could not be set up from the config.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{key}: cannot read {path}: {source}")]
    Read {
        key: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{key}: {path}: {what}")]
    Bad {
        key: &'static str,
        path: String,
        what: String,
    },
    #[error("{0}")]
    Config(String),
}

fn open(key: &'static str, path: &str) -> Result<BufReader<File>, TlsError> {
    File::open(Path::new(path))
        .map(BufReader::new)
        .map_err(|source| TlsError::Read {
            key,
            path: path.into(),
            source,
        })
}

fn certs(key: &'static str, path: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut open(key, path)?).collect();
    let certs = certs.map_err(|e| TlsError::Bad {
        key,
        path: path.into(),
        what: e.to_string(),
    })?;
    if certs.is_empty() {
        return Err(TlsError::Bad {
            key,
            path: path.into(),
            what: "no PEM certificate in it".into(),
        });
    }
    Ok(certs)
}

fn private_key(key: &'static str, path: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    rustls_pemfile::private_key(&mut open(key, path)?)
        .map_err(|e| TlsError::Bad {
            key,
            path: path.into(),
            what: e.to_string(),
        })?
        .ok_or_else(|| TlsError::Bad {
            key,
            path: path.into(),
            what: "no PEM private key in it".into(),
        })
}

fn roots(key: &'static str, path: Option<&str>) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    match path {
        Some(p) => {
            for c in certs(key, p)? {
                store.add(c).map_err(|e| TlsError::Bad {
                    key,
                    path: p.into(),
                    what: e.to_string(),
                })?;
            }
        }
        None => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    Ok(store)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS toward clients: the mode and, unless disabled, the acceptor.
#[derive(Clone)]
pub(crate) struct ClientSide {
    pub mode: SslMode,
    pub(crate) acceptor: Option<tokio_rustls::TlsAcceptor>,
}

/// TLS toward servers: the mode and the connector (unless disabled).
#[derive(Clone)]
pub(crate) struct ServerSide {
    pub mode: SslMode,
    pub(crate) connector: Option<tokio_rustls::TlsConnector>,
}

impl std::fmt::Debug for ServerSide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSide")
            .field("mode", &self.mode)
            .finish()
    }
}

/// Build the client side from `[general]`: a certificate and key are needed unless the mode
/// is `disable`; verify-ca and verify-full also ask clients for a certificate signed by
/// `client_tls_ca_file`.
pub(crate) fn client_side(g: &General) -> Result<ClientSide, TlsError> {
    let mode = g.client_tls_sslmode;
    if mode == SslMode::Disable {
        return Ok(ClientSide {
            mode,
            acceptor: None,
        });
    }
    let (Some(cert), Some(key)) = (&g.client_tls_cert_file, &g.client_tls_key_file) else {
        return Err(TlsError::Config(format!(
            "general.client_tls_sslmode = \"{}\" needs client_tls_cert_file and client_tls_key_file",
            mode.as_str()
        )));
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) {
        let ca = g.client_tls_ca_file.as_deref().ok_or_else(|| {
            TlsError::Config(format!(
                "general.client_tls_sslmode = \"{}\" needs client_tls_ca_file to verify client certificates",
                mode.as_str()
            ))
        })?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots("client_tls_ca_file", Some(ca))?),
            provider(),
        )
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let config = builder
        .with_single_cert(
            certs("client_tls_cert_file", cert)?,
            private_key("client_tls_key_file", key)?,
        )
        .map_err(|e| TlsError::Bad {
            key: "client_tls_key_file",
            path: key.clone(),
            what: e.to_string(),
        })?;
    Ok(ClientSide {
        mode,
        acceptor: Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
    })
}

/// Accepts any server certificate (sslmode allow, prefer, require: encryption without
/// authentication, as libpq does), still checking the handshake signatures.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// verify-ca: the chain must lead to a trusted root; the host name is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(m, c, d)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Build the server side from `[general]`.
pub(crate) fn server_side(g: &General) -> Result<ServerSide, TlsError> {
    let mode = g.server_tls_sslmode;
    if mode == SslMode::Disable {
        return Ok(ServerSide {
            mode,
            connector: None,
        });
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match mode {
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let roots = Arc::new(roots(
                "server_tls_ca_file",
                g.server_tls_ca_file.as_deref(),
            )?);
            let verifier =
                rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider())
                    .build()
                    .map_err(|e| TlsError::Config(e.to_string()))?;
            if mode == SslMode::VerifyCa {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(ChainOnly(verifier)))
            } else {
                builder.with_webpki_verifier(verifier)
            }
        }
        _ => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider()))),
    };
    let config = match (&g.server_tls_cert_file, &g.server_tls_key_file) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(
                certs("server_tls_cert_file", cert)?,
                private_key("server_tls_key_file", key)?,
            )
            .map_err(|e| TlsError::Bad {
                key: "server_tls_key_file",
                path: key.clone(),
                what: e.to_string(),
            })?,
        _ => builder.with_no_client_auth(),
    };
    Ok(ServerSide {
        mode,
        connector: Some(tokio_rustls::TlsConnector::from(Arc::new(config))),
    })
}

/// The Common Name of the certificate a client presented, if any (for `cert` authentication;
/// the chain was verified in the handshake when client_tls_sslmode asks for it).
pub(crate) fn client_cert_cn<IO>(tls: &tokio_rustls::server::TlsStream<IO>) -> Option<String> {
    let der = tls.get_ref().1.peer_certificates()?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    Some(cn)
}

/// A TLS connection's protocol, cipher suite and key exchange group packed in a u64 (0 for
/// plaintext), for SHOW CLIENTS / SERVERS' `tls` column ([`describe`]).
pub(crate) fn info(state: &rustls::CommonState) -> u64 {
    let version = state
        .protocol_version()
        .map_or(0, |v| u64::from(u16::from(v)));
    let suite = state
        .negotiated_cipher_suite()
        .map_or(0, |s| u64::from(u16::from(s.suite())));
    let group = state
        .negotiated_key_exchange_group()
        .map_or(0, |g| u64::from(u16::from(g.name())));
    1 << 48 | version << 32 | suite << 16 | group
}

/// [`info`] as PgBouncer prints it (`TLSv1.3/TLS13_AES_256_GCM_SHA384/ECDH=X25519`, with
/// rustls' names); "" for plaintext.
pub(crate) fn describe(packed: u64) -> String {
    if packed == 0 {
        return String::new();
    }
    let version = rustls::ProtocolVersion::from((packed >> 32) as u16);
    let suite = rustls::CipherSuite::from((packed >> 16) as u16);
    let group = rustls::NamedGroup::from(packed as u16);
    let version = match version {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".to_string(),
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".to_string(),
        other => format!("{other:?}"),
    };
    format!("{version}/{suite:?}/ECDH={group:?}")
}
