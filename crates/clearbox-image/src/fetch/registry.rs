//! The registry source: the OCI distribution API through `oci-client`.

use std::fs::File;
use std::io::{self, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use super::{cosign_layers, FetchOptions, Source, MANIFEST_TYPES, MAX_MANIFEST};
use crate::digest::{Digest, Hashing};
use crate::error::{Error, Result};
use crate::policy::cosign_tag;
use crate::signature::StoredSignature;
use crate::store::Store;

/// A registry, through `oci-client` on a single-threaded tokio runtime.
pub(super) struct Registry {
    rt: tokio::runtime::Runtime,
    client: oci_client::Client,
    reference: oci_client::Reference,
}

impl Registry {
    pub(super) fn new(reference: &oci_client::Reference, opts: &FetchOptions) -> Result<Self> {
        // rustls with the ring provider (no aws-lc C build); installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("cannot start the I/O runtime", "tokio", e))?;
        let config = oci_client::client::ClientConfig {
            protocol: oci_client::client::ClientProtocol::HttpsExcept(
                opts.insecure_registries.clone(),
            ),
            connect_timeout: Some(std::time::Duration::from_secs(30)),
            read_timeout: Some(std::time::Duration::from_secs(120)),
            platform_resolver: None,
            ..Default::default()
        };
        Ok(Self {
            rt,
            client: oci_client::Client::new(config),
            reference: reference.clone(),
        })
    }

    fn err(&self, e: impl std::error::Error + Send + Sync + 'static) -> Error {
        Error::Registry {
            image: self.reference.whole(),
            source: Box::new(e),
        }
    }

    pub(super) fn manifest(&mut self, r: &oci_client::Reference) -> Result<(Vec<u8>, String)> {
        let (bytes, digest) = self
            .rt
            .block_on(self.client.pull_manifest_raw(
                r,
                &oci_client::secrets::RegistryAuth::Anonymous,
                MANIFEST_TYPES,
            ))
            .map_err(|e| self.err(e))?;
        if bytes.len() as u64 > MAX_MANIFEST {
            return Err(Error::invalid(
                format!("manifest of {}", r.whole()),
                "too large",
            ));
        }
        Ok((bytes.to_vec(), digest))
    }

    /// Cosign signatures (the `sha256-<hex>.sig` tag); a registry without them gives none.
    pub(super) fn cosign_signatures(
        &mut self,
        r: &oci_client::Reference,
        top: &Digest,
    ) -> (Vec<StoredSignature>, String) {
        let sig_ref = oci_client::Reference::with_tag(
            r.registry().to_string(),
            r.repository().to_string(),
            cosign_tag(top),
        );
        let shown = format!("cosign tag {}", sig_ref.whole());
        let m = match self.manifest(&sig_ref) {
            Ok((m, _)) => m,
            Err(_) => return (Vec::new(), format!("{shown} (none)")),
        };
        let mut out = Vec::new();
        let Ok(layers) = cosign_layers(&m) else {
            return (out, format!("{shown} (unreadable)"));
        };
        for (d, sig) in layers {
            let mut buf = Vec::new();
            if self
                .rt
                .block_on(self.client.pull_blob(&sig_ref, d.as_str(), &mut buf))
                .is_ok()
                && d.verify("cosign payload", &buf).is_ok()
            {
                out.push(StoredSignature::cosign(&buf, &sig));
            }
        }
        (out, shown)
    }
}

impl Source for Registry {
    fn blob(&mut self, store: &Store, d: &Digest, what: &str) -> Result<()> {
        if store.has_blob(d) {
            return Ok(());
        }
        let mut w = store.blob_writer()?;
        let pulled = self.rt.block_on(self.client.pull_blob(
            &self.reference,
            d.as_str(),
            SyncWrite(&mut w),
        ));
        if let Err(e) = pulled {
            // oci-client checks the digest too; report a mismatch as ours.
            if let oci_client::errors::OciDistributionError::DigestError(_) = &e {
                let mut f =
                    File::open(w.path()).map_err(|e| Error::io("cannot read", w.path(), e))?;
                let mut h = Hashing::new(io::sink());
                io::copy(&mut f, &mut h).map_err(|e| Error::io("cannot read", w.path(), e))?;
                let (_, actual) = h.finish();
                return Err(Error::Digest {
                    what: what.to_string(),
                    expected: d.to_string(),
                    actual: actual.to_string(),
                });
            }
            return Err(self.err(e));
        }
        w.commit(Some((d, what)))?;
        Ok(())
    }
}

/// A synchronous writer seen as an async one (the store is a local file).
struct SyncWrite<'a, W: Write>(&'a mut W);

impl<W: Write> tokio::io::AsyncWrite for SyncWrite<'_, W> {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(self.get_mut().0.write(buf))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.get_mut().0.flush())
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
