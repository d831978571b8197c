//! One file per subcommand, wiring resolved settings to the library. Errors here are `anyhow`, for the
//! user; usage errors are [`crate::settings::UsageError`] (exit code 2).

pub mod check_config;
pub mod consume;
pub mod groups;
pub mod metadata;
pub mod produce;
pub mod tail;
pub mod web;
