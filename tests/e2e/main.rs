//! End-to-end tests: the whole mesh in-process (blaze-testkit) against real
//! Postgres, Redis and RabbitMQ. One binary, one module per area.

mod access;
mod apifuzz;
mod artifacts;
mod chat;
mod controlplane;
mod edge;
mod execution;
mod faults;
mod foundation;
mod identity;
mod sdk;
mod support;
