//! Integration and end-to-end tests, compiled as one binary. Everything here
//! goes through real parts: moto over HTTP, the local webhook receiver, and
//! the local Lambda runner with the real function binaries.

mod bad_input;
mod delivery;
mod fanout;
mod render;
mod stack;
mod storage;
