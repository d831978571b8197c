//! Tests against real Apache Kafka brokers started by `scripts/kafka-up` (scripts/test starts both the
//! single broker and the three-broker cluster). Under CI a missing broker fails the test; elsewhere the
//! test says SKIPPED and returns.

mod agent;
mod capture;
mod cli;
mod fake;
mod groups;
mod harness;
mod hostile;
mod kcat_harness;
mod secure;
mod tail;
mod web;
mod wire;
