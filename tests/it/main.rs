//! Integration and end-to-end tests, compiled as one binary. Everything here
//! goes through real parts: moto over HTTP, the local webhook receiver, and
//! the local Lambda runner with the real function binaries.

mod api;
mod api_access;
mod bad_input;
mod chaos;
mod cost;
mod delivery;
mod email;
mod events;
mod fanout;
mod feedback;
mod guarantees;
mod hostile;
mod links;
mod monitoring;
mod moto_restart;
mod open_work;
mod openapi;
mod outcomes;
mod rdctl;
mod reconcile;
mod render;
mod slack;
mod stack;
mod storage;
mod suppression;
mod unsubscribe;
mod up;
