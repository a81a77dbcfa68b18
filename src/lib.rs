//! danmaku: a live-stream bullet-comment server.
//!
//! Data flows one way, and each role is a top-level module:
//! sender -> [`logic`] (validate, rate limit, id, history) -> [`bus`] (ordered room log, presence) -> [`gateway`]
//! (batch per window, encode once, fan out) -> viewer. [`protocol`] is the wire contract every role shares;
//! [`server`] wires the roles into processes (`serve`, and the cluster's `gateway` and `logic`); [`auth`] decides
//! who may send (and watch) from signed tokens, for every role; [`limits`] holds the rate limits the logic (comments)
//! and the gateway (connections) enforce; [`web`] serves the browser client; [`bench`] is the load generator that
//! measures them; [`fuzz`] holds the fuzz targets' bodies.

pub mod auth;
pub mod bench;
pub mod bus;
pub mod config;
pub mod fdlimit;
pub mod fuzz;
pub mod gateway;
pub mod limits;
pub mod logic;
pub mod protocol;
pub mod server;
pub mod web;
