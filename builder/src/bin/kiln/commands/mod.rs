//! The `kiln` subcommands.

pub mod build;
pub mod export;
pub mod inspect;
pub mod run;
