//! tower-websockets
pub mod protocol;
