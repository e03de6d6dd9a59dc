//! The size limits of the wire protocol, shared by every port and role.

/// The longest key, in UTF-8 bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// The largest value, in UTF-8 bytes (256 KiB).
pub const MAX_VALUE_BYTES: usize = 256 * 1024;
/// The default longest line, not counting its line end (2 MiB).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 2 * 1024 * 1024;
/// The longest timeout a role accepts (one hour): deadlines are `now + timeout_ms`, and a
/// longer wait only hides a dead peer.
pub const MAX_TIMEOUT_MS: u64 = 60 * 60 * 1000;
