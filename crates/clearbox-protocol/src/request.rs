//! Typed requests of the host<->guest contract.
//!
//! The OCI spec of a container crosses the wire once, as JSON bytes in `CreateContainer`:
//! * the host rewrites its parsed [`Spec`] for the guest and serialises the result once,
//!   into a [`GuestSpec`], which it carries as opaque bytes until they are sent (inside the
//!   JSON of another message, e.g. a shim's request, they stay raw JSON, never re-encoded);
//! * the agent deserialises them once, into the [`CreateContainer`] it works on.
//!
//! An exec'd process goes the same way ([`GuestProcess`], [`ExecProcess`]).

use std::fmt;
use std::marker::PhantomData;

use oci_spec::runtime::{Process, Spec};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::guest::{ContainerId, IdError};
use crate::pb::agent as pb;
use crate::types::RootfsLocation;

/// A `T` serialised to JSON once; carried as those bytes.
pub struct Encoded<T> {
    raw: Box<RawValue>,
    of: PhantomData<fn() -> T>,
}

/// The spec the host made for the guest, serialised.
pub type GuestSpec = Encoded<Spec>;
/// The OCI process of an exec, serialised.
pub type GuestProcess = Encoded<Process>;

impl<T: Serialize> Encoded<T> {
    /// Serialises `value` (the only encoding it gets).
    pub fn encode(value: &T) -> Result<Self, serde_json::Error> {
        Ok(Self::wrap(serde_json::value::to_raw_value(value)?))
    }
}

impl<T> Encoded<T> {
    fn wrap(raw: Box<RawValue>) -> Self {
        Self {
            raw,
            of: PhantomData,
        }
    }

    /// JSON text from elsewhere (tests, tools): checked to be JSON, not to be a `T` (the
    /// agent checks that).
    pub fn from_json_text(text: String) -> Result<Self, serde_json::Error> {
        Ok(Self::wrap(RawValue::from_string(text)?))
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.raw.get().as_bytes()
    }
}

impl<T> Clone for Encoded<T> {
    fn clone(&self) -> Self {
        Self::wrap(self.raw.clone())
    }
}

impl<T> fmt::Debug for Encoded<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Encoded({} bytes)", self.raw.get().len())
    }
}

/// Inside another JSON document the bytes are written as they are.
impl<T> Serialize for Encoded<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.raw.serialize(s)
    }
}

/// Taken back as raw JSON (a syntax scan, no tree is built).
impl<'de, T> Deserialize<'de> for Encoded<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(d).map(Self::wrap)
    }
}

/// Why a request is refused before anything is done (INVALID_ARGUMENT at the agent's edge).
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Id(#[from] IdError),
    #[error("the spec is not an OCI runtime spec")]
    Spec(#[source] serde_json::Error),
    #[error("the process is not an OCI process")]
    Process(#[source] serde_json::Error),
    #[error("exec_id is empty")]
    EmptyExecId,
}

/// stdio of a container's init or an exec'd process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stdio {
    /// Allocate a pty (also when the spec's process asks for one).
    pub terminal: bool,
    /// Open a stdin stream; otherwise stdin is `/dev/null`.
    pub stdin: bool,
}

impl Stdio {
    fn to_wire(self) -> pb::StdioConfig {
        let mut s = pb::StdioConfig::new();
        s.terminal = self.terminal;
        s.stdin = self.stdin;
        s
    }

    fn from_wire(s: Option<&pb::StdioConfig>) -> Self {
        s.map(|s| Stdio {
            terminal: s.terminal,
            stdin: s.stdin,
        })
        .unwrap_or_default()
    }
}

/// `CreateContainer`, as the agent works on it.
#[derive(Debug)]
pub struct CreateContainer {
    pub id: ContainerId,
    /// The spec as the host rewrote it for the guest.
    pub spec: Spec,
    pub rootfs: RootfsLocation,
    /// Mount the rootfs read-only (also when the spec's `root.readonly` says so).
    pub rootfs_readonly: bool,
    pub stdio: Stdio,
}

impl CreateContainer {
    /// The message the host sends: the spec's bytes as they were serialised.
    pub fn to_wire(
        container_id: &str,
        spec: &GuestSpec,
        rootfs: &RootfsLocation,
        stdio: Stdio,
    ) -> pb::CreateContainerRequest {
        let mut r = pb::Rootfs::new();
        match rootfs {
            RootfsLocation::GuestPath(p) => r.path = p.clone(),
            RootfsLocation::VirtioFs { tag, path } => {
                r.virtiofs_tag = tag.clone();
                r.path = path.clone();
            }
        }
        let mut req = pb::CreateContainerRequest::new();
        req.container_id = container_id.to_string();
        req.oci_spec_json = spec.as_bytes().to_vec();
        req.rootfs = protobuf::MessageField::some(r);
        req.stdio = protobuf::MessageField::some(stdio.to_wire());
        req
    }

    /// The agent's one parse of the request (and of its spec).
    pub fn from_wire(req: &pb::CreateContainerRequest) -> Result<Self, RequestError> {
        let id = ContainerId::parse(&req.container_id)?;
        let spec = serde_json::from_slice(&req.oci_spec_json).map_err(RequestError::Spec)?;
        let r = req.rootfs.as_ref().cloned().unwrap_or_default();
        let rootfs = if r.virtiofs_tag.is_empty() {
            RootfsLocation::GuestPath(r.path)
        } else {
            RootfsLocation::VirtioFs {
                tag: r.virtiofs_tag,
                path: r.path,
            }
        };
        Ok(Self {
            id,
            spec,
            rootfs,
            rootfs_readonly: r.readonly,
            stdio: Stdio::from_wire(req.stdio.as_ref()),
        })
    }
}

/// `ExecProcess`, as the agent works on it.
#[derive(Debug)]
pub struct ExecProcess {
    pub container_id: ContainerId,
    pub exec_id: String,
    pub process: Process,
    pub stdio: Stdio,
}

impl ExecProcess {
    /// The message the host sends.
    pub fn to_wire(
        container_id: &str,
        exec_id: &str,
        process: &GuestProcess,
        stdio: Stdio,
    ) -> pb::ExecProcessRequest {
        let mut req = pb::ExecProcessRequest::new();
        req.container_id = container_id.to_string();
        req.exec_id = exec_id.to_string();
        req.process_json = process.as_bytes().to_vec();
        req.stdio = protobuf::MessageField::some(stdio.to_wire());
        req
    }

    /// The agent's one parse of the request (and of its process).
    pub fn from_wire(req: &pb::ExecProcessRequest) -> Result<Self, RequestError> {
        let container_id = ContainerId::parse(&req.container_id)?;
        if req.exec_id.is_empty() {
            return Err(RequestError::EmptyExecId);
        }
        let process = serde_json::from_slice(&req.process_json).map_err(RequestError::Process)?;
        Ok(Self {
            container_id,
            exec_id: req.exec_id.clone(),
            process,
            stdio: Stdio::from_wire(req.stdio.as_ref()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize)]
    struct Outer {
        spec: GuestSpec,
        n: u32,
    }

    #[test]
    fn an_encoded_spec_crosses_other_json_verbatim_and_is_parsed_once_by_the_agent() {
        let spec = Spec::default();
        let enc = GuestSpec::encode(&spec).unwrap();
        let outer = serde_json::to_vec(&Outer {
            spec: enc.clone(),
            n: 1,
        })
        .unwrap();
        let back: Outer = serde_json::from_slice(&outer).unwrap();
        assert_eq!(back.spec.as_bytes(), enc.as_bytes());
        let id = ContainerId::parse("c1").unwrap();
        let wire = CreateContainer::to_wire(
            id.as_str(),
            &back.spec,
            &RootfsLocation::VirtioFs {
                tag: "clearbox".into(),
                path: "rootfs".into(),
            },
            Stdio {
                terminal: true,
                stdin: false,
            },
        );
        let req = CreateContainer::from_wire(&wire).unwrap();
        assert_eq!(req.id, id);
        assert_eq!(req.spec, spec);
        assert!(req.stdio.terminal && !req.stdio.stdin);
        assert!(
            matches!(req.rootfs, RootfsLocation::VirtioFs { ref tag, .. } if tag == "clearbox")
        );
    }

    #[test]
    fn bad_requests_are_refused_with_their_reason() {
        let spec = GuestSpec::from_json_text("{\"process\": 1}".into()).unwrap();
        let root = RootfsLocation::GuestPath("/r".into());
        let wire = CreateContainer::to_wire("c1", &spec, &root, Stdio::default());
        assert!(matches!(
            CreateContainer::from_wire(&wire),
            Err(RequestError::Spec(_))
        ));
        let ok = GuestSpec::encode(&Spec::default()).unwrap();
        let wire = CreateContainer::to_wire("../x", &ok, &root, Stdio::default());
        assert!(matches!(
            CreateContainer::from_wire(&wire),
            Err(RequestError::Id(_))
        ));
        let p = GuestProcess::from_json_text("{\"args\":[\"sh\"]}".into()).unwrap();
        let wire = ExecProcess::to_wire("c1", "", &p, Stdio::default());
        assert!(matches!(
            ExecProcess::from_wire(&wire),
            Err(RequestError::EmptyExecId)
        ));
        let wire = ExecProcess::to_wire("c1", "e1", &p, Stdio::default());
        // OCI requires process.cwd and process.user.
        assert!(matches!(
            ExecProcess::from_wire(&wire),
            Err(RequestError::Process(_))
        ));
    }
}
