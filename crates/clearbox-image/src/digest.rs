//! sha256 content digests (`sha256:<64 hex>`): validation, hashing readers and writers.

use std::io::{self, Read, Write};

use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// A validated `sha256:<hex>` digest; the only algorithm images use in practice.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    pub fn parse(s: &str) -> Result<Self> {
        let hex = s
            .strip_prefix("sha256:")
            .ok_or_else(|| Error::unsupported("digest", format!("{s:?} is not sha256")))?;
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(Error::invalid("digest", format!("{s:?}")));
        }
        Ok(Self(s.to_string()))
    }

    pub fn of(bytes: &[u8]) -> Self {
        Self(format!("sha256:{:x}", Sha256::digest(bytes)))
    }

    /// The 64 hex characters, safe as a file name.
    pub fn hex(&self) -> &str {
        &self.0[7..]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Fails with a message naming `what` unless `bytes` hash to this digest.
    pub fn verify(&self, what: &str, bytes: &[u8]) -> Result<()> {
        let actual = Self::of(bytes);
        if &actual != self {
            return Err(Error::Digest {
                what: what.to_string(),
                expected: self.0.clone(),
                actual: actual.0,
            });
        }
        Ok(())
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Digest {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Self::parse(&s)
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}

/// Hashes what passes through it (read or written).
pub struct Hashing<T> {
    inner: T,
    hasher: Sha256,
    len: u64,
}

impl<T> Hashing<T> {
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn finish(self) -> (T, Digest) {
        let d = Digest(format!("sha256:{:x}", self.hasher.finalize()));
        (self.inner, d)
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_verify() {
        let d = Digest::of(b"hello");
        assert_eq!(
            d.as_str(),
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert!(Digest::parse(d.as_str()).is_ok());
        assert!(Digest::parse("sha256:../../etc").is_err());
        assert!(Digest::parse("sha512:00").is_err());
        assert!(d.verify("blob", b"hello").is_ok());
        let e = d.verify("layer x", b"hellO").unwrap_err().to_string();
        assert!(e.contains("layer x: digest mismatch"), "{e}");
    }

    #[test]
    fn hashing_writer() {
        let mut h = Hashing::new(Vec::new());
        h.write_all(b"hel").unwrap();
        h.write_all(b"lo").unwrap();
        let (v, d) = h.finish();
        assert_eq!(v, b"hello");
        assert_eq!(d, Digest::of(b"hello"));
    }
}
