//! The initial CPU state of vCPU 0 (64-bit mode at the kernel's entry, the
//! boot page tables active) and the KVM-flavour probe.
//!
//! The state is the same ordinary long mode on every KVM; on the PVM
//! flavour the kernel's first instructions register its PV page (the page
//! address travels in RDX), which is the only difference.

use kvm_bindings::{kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs, Msrs};
use kvm_ioctls::VcpuFd;

use kiln_boot::msr::{PVM_SIGNATURE, PVM_SIGNATURE_VALUE};

use super::layout::BOOT_INFO;

const CR0_PE: u64 = 1 << 0;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_AM: u64 = 1 << 18;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const EFER_SCE: u64 = 1 << 0;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const EFER_NXE: u64 = 1 << 11;

/// Which KVM the host runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// Hardware virtualisation (VMX or SVM).
    Standard,
    /// The PVM flavour (kvm_pvm): guest CPL0 code is emulated until the
    /// vCPU registers its PV page.
    Pvm,
}

impl Flavour {
    /// A short name for logs and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Flavour::Standard => "standard",
            Flavour::Pvm => "pvm",
        }
    }
}

/// Reads the PVM signature MSR: it says "PVM" on a PVM host, and does not
/// exist (KVM_GET_MSRS returns no entries) anywhere else.
pub fn detect_flavour(vcpu: &VcpuFd) -> Flavour {
    let Ok(mut msrs) = Msrs::from_entries(&[kvm_msr_entry {
        index: PVM_SIGNATURE,
        ..Default::default()
    }]) else {
        return Flavour::Standard;
    };
    match vcpu.get_msrs(&mut msrs) {
        Ok(1) if msrs.as_slice()[0].data == PVM_SIGNATURE_VALUE => Flavour::Pvm,
        _ => Flavour::Standard,
    }
}

/// The guest's current TSC (IA32_TSC through KVM_GET_MSRS).
pub fn guest_tsc(vcpu: &VcpuFd) -> Option<u64> {
    let mut msrs = Msrs::from_entries(&[kvm_msr_entry {
        index: 0x10,
        ..Default::default()
    }])
    .ok()?;
    match vcpu.get_msrs(&mut msrs) {
        Ok(1) => Some(msrs.as_slice()[0].data),
        _ => None,
    }
}

fn code_segment() -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: 0x10,
        type_: 0xb, // execute/read, accessed
        present: 1,
        dpl: 0,
        db: 0,
        s: 1,
        l: 1,
        g: 1,
        ..Default::default()
    }
}

fn data_segment() -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: 0x18,
        type_: 0x3, // read/write, accessed
        present: 1,
        dpl: 0,
        db: 1,
        s: 1,
        l: 0,
        g: 1,
        ..Default::default()
    }
}

/// Special registers for 64-bit mode with the boot page tables (PML4 at
/// `cr3`). The kernel loads its own GDT, IDT and TSS with the same
/// selectors.
pub fn boot_sregs(mut sregs: kvm_sregs, fsgsbase: bool, cr3: u64) -> kvm_sregs {
    sregs.cs = code_segment();
    sregs.ss = data_segment();
    let unusable = kvm_segment {
        unusable: 1,
        ..Default::default()
    };
    sregs.ds = unusable;
    sregs.es = unusable;
    sregs.fs = unusable;
    sregs.gs = unusable;
    sregs.ldt = kvm_segment {
        unusable: 1,
        ..Default::default()
    };
    // A placeholder busy TSS (VM entry requires a usable TR); the kernel
    // loads its own with LTR.
    sregs.tr = kvm_segment {
        limit: 0x67,
        type_: 0xb,
        present: 1,
        ..Default::default()
    };
    sregs.gdt.base = 0;
    sregs.gdt.limit = 0;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_AM | CR0_PG;
    sregs.cr3 = cr3;
    sregs.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT | if fsgsbase { 1 << 16 } else { 0 };
    sregs.efer = EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE;
    sregs
}

/// General registers at the kernel entry: RDI = the vCPU's index, RSI =
/// boot-info address, RDX = the vCPU's PVM registration page (0 when not
/// on PVM).
pub fn boot_regs(entry: u64, index: u8, pv_page: u64) -> kvm_regs {
    kvm_regs {
        rip: entry,
        rdi: u64::from(index),
        rsi: BOOT_INFO.0,
        rdx: pv_page,
        rflags: 0x2,
        ..Default::default()
    }
}
