//! Image signatures: containers' "simple signing" (an OpenPGP signed message, checked with rPGP)
//! and cosign's (ECDSA P-256 over the simple-signing payload).
//!
//! Why cosign signatures are checked here rather than with the `sigstore` crate: a
//! `sigstoreSigned` requirement with a public key needs exactly one ECDSA P-256/SHA-256
//! verification of the payload bytes and a look at the payload's JSON. The `sigstore` crate
//! brings a second TLS/HTTP stack, Fulcio/Rekor clients and several crypto backends (minutes of
//! build on a small machine, a large attack surface in the fetch worker) for nothing we use:
//! keyless (Fulcio/Rekor) verification is refused by the policy parser with a clear error.

use base64::Engine as _;
use p256::ecdsa::signature::Verifier as _;
use p256::pkcs8::DecodePublicKey as _;
use pgp::composed::{Deserializable as _, Message, SignedPublicKey};
use pgp::types::KeyDetails as _;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::digest::Digest;
use crate::error::{Error, Result};

/// The largest signature we read (a simple-signing message or a cosign payload is ~1 KiB).
pub const MAX_SIGNATURE: u64 = 64 * 1024;

/// The cosign annotation carrying the base64 signature of a payload layer.
pub const COSIGN_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
pub const COSIGN_PAYLOAD_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";

/// A signature as fetched, and as kept in the store next to the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum StoredSignature {
    /// A simple-signing OpenPGP message (base64).
    SimpleSigning { message: String },
    /// A cosign payload (base64) and its signature (base64 DER, as in the annotation).
    Cosign { payload: String, signature: String },
}

impl StoredSignature {
    pub fn simple(message: &[u8]) -> Self {
        StoredSignature::SimpleSigning {
            message: b64().encode(message),
        }
    }

    pub fn cosign(payload: &[u8], signature_b64: &str) -> Self {
        StoredSignature::Cosign {
            payload: b64().encode(payload),
            signature: signature_b64.trim().to_string(),
        }
    }
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// What a signature claims: the image's name and manifest digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub docker_reference: String,
    pub manifest_digest: String,
}

/// Parses a simple-signing / cosign payload.
pub fn parse_payload(bytes: &[u8]) -> std::result::Result<Claim, String> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("payload is not JSON: {e}"))?;
    let crit = v
        .get("critical")
        .ok_or("payload has no \"critical\" section")?;
    let typ = crit.get("type").and_then(|t| t.as_str()).unwrap_or("");
    if typ != "atomic container signature" && typ != "cosign container image signature" {
        return Err(format!("payload type {typ:?} is not a container signature"));
    }
    let docker_reference = crit
        .pointer("/identity/docker-reference")
        .and_then(|s| s.as_str())
        .ok_or("payload has no docker-reference")?
        .to_string();
    let manifest_digest = crit
        .pointer("/image/docker-manifest-digest")
        .and_then(|s| s.as_str())
        .ok_or("payload has no docker-manifest-digest")?
        .to_string();
    Ok(Claim {
        docker_reference,
        manifest_digest,
    })
}

/// A set of OpenPGP public keys (a keyring file: armored or binary, one or more keys).
#[derive(Debug, Clone, Default)]
pub struct GpgKeys {
    pub keys: Vec<SignedPublicKey>,
}

impl GpgKeys {
    pub fn parse(bytes: &[u8], what: &str) -> Result<Self> {
        let iter = SignedPublicKey::from_reader_many(std::io::Cursor::new(bytes.to_vec()))
            .map_err(|e| Error::invalid(format!("GPG key {what}"), e.to_string()))?
            .0;
        let mut keys = Vec::new();
        for k in iter {
            let k = k.map_err(|e| Error::invalid(format!("GPG key {what}"), e.to_string()))?;
            keys.push(k);
        }
        if keys.is_empty() {
            return Err(Error::invalid(
                format!("GPG key {what}"),
                "no public key in it",
            ));
        }
        Ok(Self { keys })
    }

    /// The primary keys' fingerprints (upper-case hex), as gpg prints them.
    pub fn fingerprints(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| format!("{:X}", k.fingerprint()))
            .collect()
    }
}

/// Verifies a simple-signing message with any of `keys`; returns the claim and the signing
/// key's primary fingerprint.
pub fn verify_simple(
    message: &[u8],
    keys: &GpgKeys,
) -> std::result::Result<(Claim, String), String> {
    if message.len() as u64 > MAX_SIGNATURE {
        return Err("signature too large".into());
    }
    let armored = message.starts_with(b"-----BEGIN");
    let mut msg = if armored {
        Message::from_armor(std::io::Cursor::new(message.to_vec()))
            .map(|(m, _)| m)
            .map_err(|e| format!("not an OpenPGP message: {e}"))?
    } else {
        Message::from_bytes(std::io::Cursor::new(message.to_vec()))
            .map_err(|e| format!("not an OpenPGP message: {e}"))?
    };
    for _ in 0..4 {
        if !msg.is_compressed() {
            break;
        }
        msg = msg
            .decompress()
            .map_err(|e| format!("cannot decompress the signature: {e}"))?;
    }
    if !msg.is_signed() {
        return Err("the OpenPGP message is not signed".into());
    }
    let payload = read_limited_msg(&mut msg)?;
    let issuer = match &msg {
        Message::Signed { reader, .. } => reader
            .signature(0)
            .map(|s| {
                let fps = s.issuer_fingerprint();
                if let Some(fp) = fps.first() {
                    format!("{fp:X}")
                } else {
                    s.issuer_key_id()
                        .first()
                        .map(|id| id.to_string().to_uppercase())
                        .unwrap_or_else(|| "an unknown key".into())
                }
            })
            .unwrap_or_else(|| "an unknown key".into()),
        _ => "an unknown key".into(),
    };
    for key in &keys.keys {
        let primary_fp = format!("{:X}", key.fingerprint());
        let mut ok = msg.verify(&key.primary_key).is_ok();
        if !ok {
            ok = key.public_subkeys.iter().any(|sk| msg.verify(sk).is_ok());
        }
        if ok {
            let claim = parse_payload(&payload)?;
            return Ok((claim, primary_fp));
        }
    }
    Err(format!("signed by {issuer}, which is not a trusted key"))
}

fn read_limited_msg(msg: &mut Message<'_>) -> std::result::Result<Vec<u8>, String> {
    use std::io::Read;
    let mut out = Vec::new();
    msg.take(MAX_SIGNATURE + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("cannot read the signed payload: {e}"))?;
    if out.len() as u64 > MAX_SIGNATURE {
        return Err("signed payload too large".into());
    }
    // The signature can only be checked once the whole message was read.
    let mut rest = Vec::new();
    msg.read_to_end(&mut rest)
        .map_err(|e| format!("cannot read the signed payload: {e}"))?;
    Ok(out)
}

/// An ECDSA P-256 public key (cosign's `cosign.pub`, a PEM SubjectPublicKeyInfo).
#[derive(Debug, Clone)]
pub struct CosignKey {
    pub key: p256::ecdsa::VerifyingKey,
    /// sha256 of the DER key, first 16 hex digits: how messages name it.
    pub id: String,
}

impl CosignKey {
    pub fn parse(bytes: &[u8], what: &str) -> Result<Self> {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| Error::invalid(format!("cosign key {what}"), "not PEM text"))?;
        let key = p256::ecdsa::VerifyingKey::from_public_key_pem(text.trim()).map_err(|e| {
            Error::invalid(
                format!("cosign key {what}"),
                format!("not an ECDSA P-256 public key in PEM: {e}"),
            )
        })?;
        let der = key.to_encoded_point(false);
        let id = format!("{:x}", sha2::Sha256::digest(der.as_bytes()));
        Ok(Self {
            key,
            id: id[..16].to_string(),
        })
    }
}

/// Verifies a cosign signature (base64 DER ECDSA over `payload`) with any of `keys`.
pub fn verify_cosign(
    payload: &[u8],
    signature_b64: &str,
    keys: &[CosignKey],
) -> std::result::Result<(Claim, String), String> {
    if payload.len() as u64 > MAX_SIGNATURE {
        return Err("payload too large".into());
    }
    let raw = b64()
        .decode(signature_b64.trim())
        .map_err(|e| format!("signature is not base64: {e}"))?;
    let sig = p256::ecdsa::Signature::from_der(&raw)
        .or_else(|_| p256::ecdsa::Signature::from_slice(&raw))
        .map_err(|e| format!("signature is not an ECDSA signature: {e}"))?;
    for k in keys {
        if k.key.verify(payload, &sig).is_ok() {
            let claim = parse_payload(payload)?;
            return Ok((claim, k.id.clone()));
        }
    }
    Err("cosign signature does not verify with any trusted key".into())
}

/// The digest a claim names, checked.
pub fn claim_digest(claim: &Claim) -> std::result::Result<Digest, String> {
    Digest::parse(&claim.manifest_digest).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_fields() {
        let p = br#"{"critical":{"identity":{"docker-reference":"r/a:1"},"image":{"docker-manifest-digest":"sha256:00"},"type":"atomic container signature"},"optional":{}}"#;
        let c = parse_payload(p).unwrap();
        assert_eq!(c.docker_reference, "r/a:1");
        assert_eq!(c.manifest_digest, "sha256:00");
        assert!(parse_payload(br#"{"critical":{"type":"other"}}"#).is_err());
    }

    #[test]
    fn cosign_round_trip() {
        use p256::ecdsa::signature::Signer as _;
        use p256::pkcs8::EncodePublicKey as _;
        let sk = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
        let pem = sk
            .verifying_key()
            .to_public_key_pem(p256::pkcs8::LineEnding::LF)
            .unwrap();
        let key = CosignKey::parse(pem.as_bytes(), "test").unwrap();
        let payload = br#"{"critical":{"identity":{"docker-reference":"r/a"},"image":{"docker-manifest-digest":"sha256:11"},"type":"cosign container image signature"},"optional":null}"#;
        let sig: p256::ecdsa::Signature = sk.sign(payload);
        let der = b64().encode(sig.to_der().as_bytes());
        let (claim, id) = verify_cosign(payload, &der, std::slice::from_ref(&key)).unwrap();
        assert_eq!(claim.docker_reference, "r/a");
        assert_eq!(id, key.id);
        let mut tampered = payload.to_vec();
        tampered[20] ^= 1;
        assert!(verify_cosign(&tampered, &der, &[key]).is_err());
    }
}
