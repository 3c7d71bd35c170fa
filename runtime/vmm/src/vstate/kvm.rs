//! The process-wide KVM handle and what is worth fetching from it once.

use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Cap, Kvm};

use crate::VmmError;

/// `/dev/kvm`, opened once, with the host-supported CPUID table cached
/// (KVM_GET_SUPPORTED_CPUID costs ~0.4 ms; every VM of the process reuses it).
pub struct Hypervisor {
    kvm: Kvm,
    supported_cpuid: CpuId,
}

impl Hypervisor {
    /// Opens `/dev/kvm` and checks the capabilities kiln needs.
    ///
    /// # Errors
    /// When /dev/kvm is missing or inaccessible, or lacks a capability.
    pub fn open() -> Result<Self, VmmError> {
        let kvm = Kvm::new().map_err(|e| VmmError::KvmUnavailable(e.to_string()))?;
        for (cap, name) in [
            (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
            (Cap::ExtCpuid, "KVM_CAP_EXT_CPUID"),
        ] {
            if !kvm.check_extension(cap) {
                return Err(VmmError::KvmUnavailable(format!("/dev/kvm lacks {name}")));
            }
        }
        let supported_cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(|e| VmmError::Kvm("KVM_GET_SUPPORTED_CPUID", e))?;
        Ok(Self {
            kvm,
            supported_cpuid,
        })
    }

    /// The kvm-ioctls handle.
    pub fn kvm(&self) -> &Kvm {
        &self.kvm
    }

    /// The host-supported CPUID table.
    pub fn supported_cpuid(&self) -> &CpuId {
        &self.supported_cpuid
    }
}
