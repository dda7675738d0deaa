//! TLS for the SMTP listeners: the configured PEM files, or a self-signed certificate for
//! `smtp.hostname` (and the loopback names) generated on first start and kept in
//! `<data_dir>/tls/` so that clients that pinned it keep working across restarts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use mailmux_core::Config;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub fn server_config(config: &Config) -> anyhow::Result<Arc<ServerConfig>> {
    let (cert_path, key_path) = match (&config.tls.cert, &config.tls.key) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone()),
        _ => generated_certificate(&config.storage.data_dir, &config.smtp.hostname)?,
    };
    let certs = CertificateDer::pem_file_iter(&cert_path)
        .with_context(|| format!("tls.cert: cannot read {}", cert_path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| {
            format!(
                "tls.cert: {} is not a PEM certificate chain",
                cert_path.display()
            )
        })?;
    if certs.is_empty() {
        anyhow::bail!("tls.cert: {} holds no certificate", cert_path.display());
    }
    let key = PrivateKeyDer::from_pem_file(&key_path).with_context(|| {
        format!(
            "tls.key: cannot read a PEM private key from {}",
            key_path.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("tls.cert and tls.key do not form a usable certificate")?;
    Ok(Arc::new(server))
}

/// Paths of the generated certificate, creating it the first time.
fn generated_certificate(data_dir: &Path, hostname: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let dir = data_dir.join("tls");
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let generated = rcgen::generate_simple_self_signed(subject_alt_names(hostname))
        .context("cannot generate a self-signed certificate")?;
    crate::serve::write_private_file(&key_path, generated.signing_key.serialize_pem().as_bytes())?;
    // Both durable with their directory: a key without its certificate after a crash is
    // replaced as a pair at the next start.
    crate::serve::write_atomically(&cert_path, generated.cert.pem().as_bytes())?;
    tracing::info!(cert = %cert_path.display(), "generated a self-signed TLS certificate for {hostname}");
    Ok((cert_path, key_path))
}

/// The names the generated certificate covers: `smtp.hostname`, and the loopback names a
/// client on the same machine uses (`localhost`, `127.0.0.1`, `::1`), so that a client that
/// verifies the certificate it was given (pinned, or trusted for a test) also accepts the
/// name or address it connected to. rcgen makes the addresses IP SANs.
fn subject_alt_names(hostname: &str) -> Vec<String> {
    let mut names = vec![hostname.to_string()];
    for local in ["localhost", "127.0.0.1", "::1"] {
        if !names.iter().any(|n| n.eq_ignore_ascii_case(local)) {
            names.push(local.to_string());
        }
    }
    names
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_hostname_and_each_loopback_name_once() {
        assert_eq!(
            super::subject_alt_names("relay.example.test"),
            ["relay.example.test", "localhost", "127.0.0.1", "::1"]
        );
        assert_eq!(
            super::subject_alt_names("localhost"),
            ["localhost", "127.0.0.1", "::1"]
        );
    }
}
