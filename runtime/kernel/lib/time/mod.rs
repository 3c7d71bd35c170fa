//! Time as pure computation: civil dates from seconds ([`civil`]) and the
//! vDSO image mapped into every program ([`vdso`]). The kernel's `time`
//! reads the clocks and runs the timers.

pub mod civil;
pub mod vdso;
