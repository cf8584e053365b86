//! clearbox images: run an OCI image directly, its signature checked by default, fetched without
//! privilege (rkt's principles).
//!
//! * [`store`]: the content-addressed store, layers shared between images.
//! * [`fetch`]: registry pull (`oci-client`) and import (OCI layout, oci-archive,
//!   docker-archive), digests checked, policy judged before layers are fetched.
//! * [`unpack`]: safe unpacking (openat2 `RESOLVE_BENEATH`, whiteouts, no devices), ownership
//!   recorded rather than applied; root materialises a bundle's rootfs from it.
//! * [`policy`], [`signature`], [`trust`]: containers' policy.json, simple signing (rPGP),
//!   cosign keys (P-256), key management per prefix.
//! * [`worker`]: the unprivileged fetch worker (privilege drop and its request protocol).
//! * [`bundle`]: the root side of `image run`: bundle and runtime spec from a checked image.
//!
//! The runtime core does not know this crate; the CLI joins them.

pub mod bundle;
pub mod digest;
pub mod error;
pub mod fetch;
pub mod policy;
pub mod signature;
pub mod store;
pub mod trust;
pub mod unpack;
pub mod worker;

pub use digest::Digest;
pub use error::{Error, Result};
pub use store::{ImageRecord, Store, Verification};
