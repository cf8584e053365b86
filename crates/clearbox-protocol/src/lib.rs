//! clearbox agent API: ttrpc + protobuf, transport-agnostic
