//! The `kiln` subcommands.

pub mod build;
pub mod inspect;
pub mod run;
