//! rustls client configuration from [`TlsOptions`] (ring provider): CA file or system roots,
//! optional client certificate, and the explicitly insecure "accept any certificate" verifier.
//! Also turns rustls handshake errors into sentences that name the CA file.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use super::TlsOptions;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let iter = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {what} {}: {e}", path.display()))?;
    let certs = iter
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad PEM in {what} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate found in {what} {}", path.display()));
    }
    Ok(certs)
}

/// Builds the client configuration. `addr` only names the server in the warning.
pub(crate) fn client_config(opts: &TlsOptions, addr: &str) -> Result<Arc<ClientConfig>, String> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS provider: {e}"))?;
    let builder = if opts.insecure_skip_verify {
        log::warn!(
            "TLS certificate verification is DISABLED for {addr} (insecure_skip_verify): \
             anyone on the network path can impersonate this server"
        );
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
    } else {
        let mut roots = RootCertStore::empty();
        match &opts.ca_file {
            Some(p) => {
                for c in read_certs(p, "CA file")? {
                    roots.add(c).map_err(|e| {
                        format!("unusable certificate in CA file {}: {e}", p.display())
                    })?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for c in found.certs {
                    // A malformed system certificate is skipped, as browsers do.
                    let _ = roots.add(c);
                }
                if roots.is_empty() {
                    return Err("no system CA certificates found; set the TLS CA file".into());
                }
            }
        }
        builder.with_root_certificates(roots)
    };
    let cfg = match (&opts.cert_file, &opts.key_file) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert, "client certificate file")?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("cannot read client key file {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate/key rejected: {e}"))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err("a client certificate needs both the certificate and the key file".into()),
    };
    Ok(Arc::new(cfg))
}

/// The name the server certificate must match: `server_name` if set, else the host of `addr`.
pub(crate) fn server_name(opts: &TlsOptions, addr: &str) -> Result<ServerName<'static>, String> {
    let name = opts
        .server_name
        .clone()
        .unwrap_or_else(|| super::host_of(addr).to_string());
    ServerName::try_from(name.clone()).map_err(|e| format!("invalid TLS server name {name:?}: {e}"))
}

/// Rephrases a handshake error. rustls reports certificate problems as an `io::Error`
/// wrapping a `rustls::Error`; say "certificate verify failed" and name the CA file, which is
/// what an operator needs to check.
pub(crate) fn describe_handshake_error(e: &io::Error, opts: &TlsOptions) -> Option<String> {
    let inner = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    let ca = match &opts.ca_file {
        Some(p) => format!("CA file {}", p.display()),
        None => "the system CA certificates".to_string(),
    };
    Some(match inner {
        rustls::Error::InvalidCertificate(c) => {
            let hint = match c {
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. } => {
                    " (the certificate does not name this host; set the TLS server name)"
                        .to_string()
                }
                _ => format!(" (is the server certificate signed by a CA in {ca}?)"),
            };
            format!("certificate verify failed: {inner}{hint}")
        }
        rustls::Error::AlertReceived(a) => {
            format!("server sent TLS alert {a:?} (does it require a client certificate?)")
        }
        other => format!("{other}"),
    })
}

/// Accepts any server certificate; only built when `insecure_skip_verify` is set, and then
/// logged as a warning. Handshake signatures are still checked so the session is at least
/// bound to the presented key.
#[derive(Debug)]
struct AcceptAnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
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
