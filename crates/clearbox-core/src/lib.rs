//! clearbox runtime core: state, locking, configuration, isolation selection, lifecycle
