//! Loading the CPU state the guest kernel asks for into each vCPU before it
//! starts (boot flag `CPU_PRESET`, docs/boot-contract.md).
//!
//! On PVM every instruction that loads a descriptor table, the task
//! register, a model-specific or a control register is emulated by the
//! host, ~20 µs each: a dozen per vCPU at boot. kiln-vmm sets each vCPU's
//! registers with ioctls anyway, so the kernel publishes the values it
//! would load in an ELF note ([`CpuStateNote`]) and kiln-vmm loads them
//! along with the boot registers. The preset page ([`CpuPreset`]) tells the
//! kernel what was loaded — and tells a snapshot's restore how to start a
//! vCPU the kernel had not started yet.

use kiln_boot::vm::KERNEL_BASE;
use kiln_boot::{CpuPreset, CpuStateNote, CpuidEntry};
use kvm_bindings::{kvm_msr_entry, kvm_segment, kvm_sregs, kvm_xcrs, Msrs};
use kvm_ioctls::VcpuFd;
use vm_memory::{ByteValued, Bytes, GuestAddress};

use crate::vstate::kvm::KvmError;
use crate::GuestMem;

const CR4_FSGSBASE: u64 = 1 << 16;
const CR4_OSXSAVE: u64 = 1 << 18;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_SFMASK: u32 = 0xc000_0084;
const MSR_GS_BASE: u32 = 0xc000_0101;
const MSR_APIC_BASE: u32 = 0x1b;
/// The APIC base MSR: the architectural base, enabled (bit 11), x2APIC
/// mode (bit 10); bit 8 marks the boot vCPU.
const X2APIC_BASE: u64 = 0xfee0_0000 | 1 << 11 | 1 << 10;
const APIC_BSP: u64 = 1 << 8;
/// Offsets of the spurious-vector and LVT timer registers in the APIC
/// register page (`kvm_lapic_state`).
const LAPIC_SVR: usize = 0xf0;
const LAPIC_LVT_TIMER: usize = 0x320;
/// The XSAVE components the kernel enables when the CPU has them (x87,
/// SSE, AVX, AVX-512): kiln-vmm's guess only, the kernel has the last word.
const XCR0_WANTED: u64 = 0xe7;

/// [`CpuStateNote`] as plain data: the note's descriptor as is (little-endian
/// u64 fields, as on this x86-64 host).
#[derive(Clone, Copy, Default)]
#[repr(transparent)]
struct NoteBytes(CpuStateNote);
// SAFETY: CpuStateNote is repr(C) and made only of u64 fields, so every
// bit pattern is a valid value.
unsafe impl ByteValued for NoteBytes {}

/// [`CpuPreset`] as vm-memory plain data.
#[derive(Clone, Copy, Default)]
#[repr(transparent)]
struct PresetBytes(CpuPreset);
// SAFETY: CpuPreset is repr(C): two u32 then u64 fields only (its note
// too), no padding, so every bit pattern is a valid value.
unsafe impl ByteValued for PresetBytes {}

/// The kernel's CPU-state request among the ELF notes in `notes` (the
/// bytes of a PT_NOTE segment); `None` when there is none or it is
/// malformed.
pub fn find_note(notes: &[u8]) -> Option<CpuStateNote> {
    let word = |at: usize| -> Option<usize> {
        let b = notes.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let mut at = 0;
    while at + 12 <= notes.len() {
        let (name_len, desc_len, kind) = (word(at)?, word(at + 4)?, word(at + 8)?);
        let name_at = at + 12;
        let desc_at = name_at.checked_add(name_len.checked_add(3)? & !3)?;
        let desc = notes.get(desc_at..desc_at.checked_add(desc_len)?)?;
        if notes.get(name_at..name_at + name_len) == Some(CpuStateNote::NAME)
            && kind == CpuStateNote::TYPE as usize
            && desc.len() == CpuStateNote::SIZE
        {
            let mut note = NoteBytes::default();
            note.as_mut_slice().copy_from_slice(desc);
            return Some(note.0);
        }
        at = desc_at.checked_add(desc_len.checked_add(3)? & !3)?;
    }
    None
}

/// Whether kiln-vmm can load `note` into `cpus` vCPUs: a layout it knows,
/// room for every vCPU, limits that fit their registers, addresses in the
/// kernel window, every TSS selector inside the GDT.
fn usable(note: &CpuStateNote, cpus: u8) -> bool {
    let cpus = u64::from(cpus.max(1));
    let last = cpus - 1;
    let in_kernel = |addr: u64| addr >= KERNEL_BASE;
    let last_selector = note
        .tss_selector_stride
        .checked_mul(last)
        .and_then(|s| s.checked_add(note.tss_selector));
    note.version == CpuStateNote::VERSION
        && note.max_cpus >= cpus
        && note.gdt_limit <= 0xffff
        && note.idt_limit <= 0xffff
        && note.tss_limit <= 0xf_ffff
        && [
            note.gdt_base,
            note.idt_base,
            note.tss_base,
            note.lstar,
            note.gs_base,
        ]
        .into_iter()
        .all(in_kernel)
        && note
            .tss_stride
            .checked_mul(last)
            .and_then(|span| note.tss_base.checked_add(span))
            .is_some()
        && note
            .gs_stride
            .checked_mul(last)
            .and_then(|span| note.gs_base.checked_add(span))
            .is_some()
        && last_selector.is_some_and(|s| {
            s & 7 == 0 && s.checked_add(15).is_some_and(|end| end <= note.gdt_limit)
        })
        && note.apic_svr <= u64::from(u32::MAX)
        && note.apic_lvt_timer <= u64::from(u32::MAX)
}

/// The preset for a VM of `cpus` vCPUs whose boot registers have CR4
/// `cr4` and CR3 `cr3`: `note`'s state, and CR4.OSXSAVE / FSGSBASE and
/// XCR0 as the kernel would set them on the CPU the learnt CPUID table
/// describes (without one, CR4 stays and XCR0 is left to the kernel).
pub fn plan(
    note: &CpuStateNote,
    cpus: u8,
    cr4: u64,
    cr3: u64,
    learnt: Option<&[CpuidEntry]>,
) -> Option<CpuPreset> {
    if !usable(note, cpus) {
        return None;
    }
    let leaf = |function: u32| {
        learnt?
            .iter()
            .find(|e| e.function == function && e.index == 0)
            .copied()
    };
    let mut preset = CpuPreset {
        magic: CpuPreset::MAGIC,
        reserved: 0,
        cr3,
        cr4,
        xcr0: 0,
        apic: u64::from(note.apic_svr != 0),
        state: *note,
    };
    if leaf(7).is_some_and(|l| l.ebx & 1 != 0) {
        preset.cr4 |= CR4_FSGSBASE;
    }
    if leaf(1).is_some_and(|l| l.ecx & (1 << 26) != 0) {
        preset.cr4 |= CR4_OSXSAVE;
        preset.xcr0 = leaf(0xd).map_or(0, |l| u64::from(l.eax) & XCR0_WANTED);
    }
    Some(preset)
}

/// A segment register's hidden state for the 64-bit TSS at `base`.
fn task_register(base: u64, limit: u64, selector: u64) -> kvm_segment {
    kvm_segment {
        base,
        limit: limit as u32,
        selector: selector as u16,
        type_: 0xb, // busy 64-bit TSS
        present: 1,
        ..Default::default()
    }
}

/// Loads `preset` into vCPU `index`, on top of its boot `sregs`. What KVM
/// refuses of CR4 and XCR0 on the first vCPU is dropped from `preset` (the
/// kernel then sets it itself); false when KVM refuses the rest, and
/// nothing of `preset` is to be used.
///
/// # Errors
/// When an ioctl fails otherwise.
pub fn apply(
    vcpu: &VcpuFd,
    mut sregs: kvm_sregs,
    preset: &mut CpuPreset,
    index: u8,
) -> Result<bool, KvmError> {
    let state = preset.state;
    let n = u64::from(index);
    sregs.gdt.base = state.gdt_base;
    sregs.gdt.limit = state.gdt_limit as u16;
    sregs.idt.base = state.idt_base;
    sregs.idt.limit = state.idt_limit as u16;
    // Checked by `usable` for every vCPU of the VM; wrapping all the same,
    // so that no value can make kiln-vmm panic (KVM judges the result).
    sregs.tr = task_register(
        state
            .tss_base
            .wrapping_add(n.wrapping_mul(state.tss_stride)),
        state.tss_limit,
        state
            .tss_selector
            .wrapping_add(n.wrapping_mul(state.tss_selector_stride)),
    );
    sregs.cr3 = preset.cr3;
    let boot_cr4 = sregs.cr4;
    sregs.cr4 = preset.cr4;
    if vcpu.set_sregs(&sregs).is_err() {
        // KVM refuses the CR4 bits (its CPUID table lacks the feature):
        // the kernel decides about them.
        sregs.cr4 = boot_cr4;
        if vcpu.set_sregs(&sregs).is_err() {
            return Ok(false);
        }
        preset.cr4 = boot_cr4;
        preset.xcr0 = 0;
    }
    let msrs = [
        (MSR_STAR, state.star),
        (MSR_LSTAR, state.lstar),
        (MSR_SFMASK, state.sfmask),
        (
            MSR_GS_BASE,
            state.gs_base.wrapping_add(n.wrapping_mul(state.gs_stride)),
        ),
    ]
    .map(|(index, data)| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    });
    let msrs = Msrs::from_entries(&msrs).map_err(|_| KvmError::MsrList(msrs.len()))?;
    match vcpu.set_msrs(&msrs) {
        Ok(n) if n == msrs.as_slice().len() => {}
        _ => return Ok(false),
    }
    if preset.apic != 0 && !load_apic(vcpu, &state, index) {
        if index != 0 {
            return Ok(false);
        }
        preset.apic = 0;
    }
    if preset.cr4 & CR4_OSXSAVE != 0 && preset.xcr0 != 0 {
        let mut xcrs = kvm_xcrs {
            nr_xcrs: 1,
            ..Default::default()
        };
        xcrs.xcrs[0].xcr = 0;
        xcrs.xcrs[0].value = preset.xcr0;
        if vcpu.set_xcrs(&xcrs).is_err() {
            preset.xcr0 = 0;
        }
    }
    Ok(true)
}

/// Puts vCPU `index`'s local APIC in x2APIC mode with `state`'s spurious
/// vector and LVT timer; false when KVM refuses.
fn load_apic(vcpu: &VcpuFd, state: &CpuStateNote, index: u8) -> bool {
    let base = X2APIC_BASE | if index == 0 { APIC_BSP } else { 0 };
    let Ok(msrs) = Msrs::from_entries(&[kvm_msr_entry {
        index: MSR_APIC_BASE,
        data: base,
        ..Default::default()
    }]) else {
        return false;
    };
    if vcpu.set_msrs(&msrs).ok() != Some(1) {
        return false;
    }
    let Ok(mut lapic) = vcpu.get_lapic() else {
        return false;
    };
    for (offset, value) in [
        (LAPIC_SVR, state.apic_svr),
        (LAPIC_LVT_TIMER, state.apic_lvt_timer),
    ] {
        for (i, byte) in (value as u32).to_le_bytes().into_iter().enumerate() {
            lapic.regs[offset + i] = byte as core::ffi::c_char;
        }
    }
    vcpu.set_lapic(&lapic).is_ok()
}

/// Writes the preset page the kernel reads.
///
/// # Errors
/// When guest memory cannot be written there.
pub fn write(mem: &GuestMem, preset: &CpuPreset) -> Result<(), vm_memory::GuestMemoryError> {
    mem.write_obj(
        PresetBytes(*preset),
        GuestAddress(kiln_boot::layout::CPU_PRESET),
    )
}

/// The preset a VM of `cpus` vCPUs booted with, read back from its memory
/// (a snapshot's, which its guest could have written): `None` when its
/// boot flags do not say `CPU_PRESET`, or the page is not a preset page
/// kiln-vmm could load.
pub fn read(mem: &GuestMem, cpus: u8) -> Option<CpuPreset> {
    let flags: u64 = mem
        .read_obj(GuestAddress(
            kiln_boot::layout::BOOT_INFO + core::mem::offset_of!(kiln_boot::BootInfo, flags) as u64,
        ))
        .ok()?;
    if flags & kiln_boot::flags::CPU_PRESET == 0 {
        return None;
    }
    let PresetBytes(preset) = mem
        .read_obj(GuestAddress(kiln_boot::layout::CPU_PRESET))
        .ok()?;
    (preset.magic == CpuPreset::MAGIC && usable(&preset.state, cpus)).then_some(preset)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note() -> CpuStateNote {
        CpuStateNote {
            version: CpuStateNote::VERSION,
            max_cpus: 4,
            gdt_base: KERNEL_BASE + 0x1b_0000,
            gdt_limit: 0x7f,
            idt_base: KERNEL_BASE + 0x20_0000,
            idt_limit: 0xfff,
            tss_base: KERNEL_BASE + 0x1b_1000,
            tss_stride: 0x68,
            tss_limit: 0x67,
            tss_selector: 0x40,
            tss_selector_stride: 16,
            star: 0x23_0010_0000_0000,
            lstar: KERNEL_BASE + 0x12_0000,
            sfmask: 0x4_7700,
            gs_base: KERNEL_BASE + 0x20_e000,
            gs_stride: 0x40,
            apic_svr: 0x1ff,
            apic_lvt_timer: 0x4_0040,
        }
    }

    fn note_bytes(name: &[u8], kind: u32, desc: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(name);
        out.resize(out.len().next_multiple_of(4), 0);
        out.extend_from_slice(desc);
        out.resize(out.len().next_multiple_of(4), 0);
        out
    }

    #[test]
    fn the_note_is_found_after_other_notes() {
        let n = note();
        let desc = NoteBytes(n);
        let desc = desc.as_slice();
        let mut notes = note_bytes(b"Xen\0", 18, &[0xb8, 0, 0x10, 0]);
        notes.extend(note_bytes(b"kiln\0", 1, desc));
        assert_eq!(find_note(&notes), Some(n));
        // Another type, a short descriptor, a truncated segment: none.
        assert_eq!(find_note(&note_bytes(b"kiln\0", 2, desc)), None);
        assert_eq!(find_note(&note_bytes(b"kiln\0", 1, &desc[..64])), None);
        assert_eq!(desc.len(), CpuStateNote::SIZE);
        let whole = note_bytes(b"kiln\0", 1, desc);
        assert_eq!(find_note(&whole[..whole.len() - 8]), None);
        assert_eq!(find_note(&[0xff; 12]), None);
    }

    #[test]
    fn a_note_kiln_cannot_load_is_not_used() {
        assert!(usable(&note(), 4));
        assert!(
            !usable(&note(), 5),
            "more vCPUs than the kernel has TSSs for"
        );
        let bad = [
            CpuStateNote {
                version: 2,
                ..note()
            },
            CpuStateNote {
                gdt_limit: 0x1_0000,
                ..note()
            },
            CpuStateNote {
                lstar: 0x40_0000,
                ..note()
            },
            // The last vCPU's TSS descriptor would lie past the GDT.
            CpuStateNote {
                tss_selector: 0x78,
                ..note()
            },
            CpuStateNote {
                tss_stride: u64::MAX,
                ..note()
            },
            // The last vCPU's TSS or per-CPU area would wrap around.
            CpuStateNote {
                tss_stride: 1 << 62,
                ..note()
            },
            CpuStateNote {
                gs_stride: 1 << 62,
                ..note()
            },
            CpuStateNote {
                tss_selector: u64::MAX - 7,
                ..note()
            },
        ];
        for n in bad {
            assert!(!usable(&n, 4), "{n:?}");
            assert_eq!(plan(&n, 4, 0x620, 0x1000, None), None);
        }
    }

    #[test]
    fn a_preset_page_is_read_back_only_when_flagged_and_loadable() {
        let mem = crate::GuestMem::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let flags_at = GuestAddress(
            kiln_boot::layout::BOOT_INFO + core::mem::offset_of!(kiln_boot::BootInfo, flags) as u64,
        );
        let preset = plan(&note(), 2, 0x620, 0x1000, None).unwrap();
        write(&mem, &preset).unwrap();
        assert_eq!(read(&mem, 2), None, "the boot flag is not set");
        mem.write_obj(kiln_boot::flags::CPU_PRESET, flags_at)
            .unwrap();
        assert_eq!(read(&mem, 2), Some(preset));
        assert_eq!(read(&mem, 5), None, "more vCPUs than the note has room for");
        // A guest that rewrote the page cannot have kiln-vmm load its values.
        let hostile = CpuPreset {
            state: CpuStateNote {
                gs_stride: 1 << 62,
                ..note()
            },
            ..preset
        };
        write(&mem, &hostile).unwrap();
        assert_eq!(read(&mem, 2), None);
    }

    #[test]
    fn cr4_and_xcr0_follow_the_learnt_table() {
        let entry = |function, ebx, ecx, eax| CpuidEntry {
            function,
            eax,
            ebx,
            ecx,
            ..Default::default()
        };
        let table = [
            entry(1, 0, 1 << 26, 0),
            entry(7, 1, 0, 0),
            entry(0xd, 0, 0, 0x2ff),
        ];
        let p = plan(&note(), 1, 0x620, 0x1000, Some(&table)).unwrap();
        assert_eq!(p.cr4, 0x620 | CR4_FSGSBASE | CR4_OSXSAVE);
        assert_eq!(p.xcr0, 0xe7);
        assert_eq!(p.cr3, 0x1000);
        let p = plan(&note(), 1, 0x620, 0x1000, None).unwrap();
        assert_eq!((p.cr4, p.xcr0), (0x620, 0));
    }
}
