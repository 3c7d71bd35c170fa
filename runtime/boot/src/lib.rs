//! The boot contract between `kiln-vmm` and the kiln guest kernel.
//!
//! Both sides compile this crate, so the layout of [`BootInfo`], the I/O
//! port numbers and the exit-status encoding cannot drift apart. It owns
//! only data definitions and their encoding; how the VMM fills them in and
//! how the kernel consumes them live in the respective crates. The prose
//! version of this contract is `docs/boot-contract.md`.
#![no_std]
#![forbid(unsafe_code)]

/// Magic at the start of [`BootInfo`]: the bytes `KILNBOOT` read as a
/// little-endian `u64`.
pub const BOOT_INFO_MAGIC: u64 = u64::from_le_bytes(*b"KILNBOOT");

/// Version of the [`BootInfo`] layout. Bump it on any incompatible change;
/// the kernel refuses (panics with a message) any version it does not know.
/// Version 2 added the virtio device table.
pub const BOOT_INFO_VERSION: u32 = 2;

/// The `PATH` a program gets when nothing sets one: Docker's default.
/// kiln-vmm adds it when `--env` names no PATH, `kiln build` writes it into
/// every image's environment, and the kernel uses it when the command line
/// (QEMU) gives the environment.
pub const DEFAULT_PATH_ENV: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The line the boot loader of an exported UEFI disk (`kiln export
/// --disk`) prints on the serial console just before it starts the
/// kernel: the firmware's and GRUB's output comes before it, the
/// program's after it (`cargo xtask boot-uefi` splits the console there).
pub const UEFI_HANDOVER_LINE: &str = "kiln: starting the kernel";

/// The line the kernel prints on the serial console, after the boot
/// loader's [`UEFI_HANDOVER_LINE`] and before the program starts, when the
/// program's standard input is that console (`kiln export --disk -i`):
/// input typed from then on reaches the program (before it, the firmware's
/// console driver may take it), and `cargo xtask boot-uefi -i` starts
/// typing there.
pub const SERIAL_STDIN_READY_LINE: &str =
    "kiln: standard input is this serial console (Ctrl-D ends it)";

/// The byte that ends the program's standard input when it reads a serial
/// console (`kiln export --disk -i`): Ctrl-D, a terminal's end-of-file
/// key, since a serial line itself never ends.
pub const SERIAL_END_OF_INPUT: u8 = 0x04;

/// Guest-physical layout fixed by the contract (everything below 1 MiB
/// belongs to the VMM's boot data; the kernel image is loaded at 1 MiB).
pub mod layout {
    /// The VMM's boot page tables lie at the top of RAM, in this order: the
    /// PML4, the PDPT of the direct map (PML4 slot
    /// [`super::vm::PHYS_MAP_SLOT`]), the PDPT of the kernel image (slot
    /// 511), then one page directory per GiB mapped. The memory map marks
    /// them [`super::region::PAGE_TABLES`] (or `RESERVED` in a small VM);
    /// CR3 points at the PML4 when the kernel starts.
    pub const fn boot_page_tables_len(mapped_end: u64) -> u64 {
        let gibs = mapped_end.div_ceil(1 << 30);
        (3 + if gibs == 0 { 1 } else { gibs }) * 0x1000
    }

    /// Where the boot page tables of a VM with `ram_size` bytes of RAM and
    /// `mapped_end` bytes mapped (RAM and the module above it) start.
    pub const fn boot_page_tables_at(ram_size: u64, mapped_end: u64) -> u64 {
        (ram_size - boot_page_tables_len(mapped_end)) & !0xfff
    }

    /// The least RAM for which the boot page tables start a page-table
    /// area (the 2 MiB holding them, which the kernel keeps for its own
    /// page tables): on PVM the host cannot map a 2 MiB range holding a
    /// page table with one 2 MiB entry of its own, so page tables kept
    /// apart leave the rest of RAM to large host entries.
    pub const PAGE_TABLE_AREA_MIN_RAM: u64 = 16 << 20;

    /// The page-table area of a VM with `ram_size` bytes of RAM and
    /// `mapped_end` bytes mapped, as `(start, end)`: the 2 MiB-aligned
    /// range holding the boot page tables, cut at the end of RAM; `None`
    /// below [`PAGE_TABLE_AREA_MIN_RAM`]. The kernel derives the same
    /// range from the memory map.
    pub const fn page_table_area(ram_size: u64, mapped_end: u64) -> Option<(u64, u64)> {
        const SIZE: u64 = 2 << 20;
        if ram_size < PAGE_TABLE_AREA_MIN_RAM {
            return None;
        }
        let start = boot_page_tables_at(ram_size, mapped_end) & !(SIZE - 1);
        let end = if start + SIZE < ram_size {
            start + SIZE
        } else {
            ram_size
        };
        Some((start, end))
    }
    /// First PVM registration page; vCPU `n` uses `PV_PAGES + n * 0x1000`.
    pub const PV_PAGES: u64 = 0x4000;
    /// How many vCPUs the PV page area holds.
    pub const MAX_VCPUS: u64 = 4;
    /// The least guest memory, in MiB, a VM may have.
    pub const MIN_MEMORY_MIB: u64 = 4;
    /// The most guest memory, in MiB, a VM may have (16 GiB): checked by
    /// the builder, by `--memory`, and again before a VM is made, as an
    /// image's configuration is not trusted.
    pub const MAX_MEMORY_MIB: u64 = 16 << 10;
    /// The [`super::BootInfo`] structure.
    pub const BOOT_INFO: u64 = 0x8000;
    /// Memory map entries ([`super::MemoryRegion`]), right after boot info.
    pub const MEMORY_MAP: u64 = 0x9000;
    /// Largest number of memory map entries.
    pub const MEMORY_MAP_MAX: u64 = 0x1000 / 24;
    /// The virtio device table ([`super::VirtioDevice`] entries).
    pub const DEVICES: u64 = 0xa000;
    /// Largest number of device table entries.
    pub const DEVICES_MAX: u64 = 0x1000 / 40;
    /// The CPUID table ([`super::CpuidTable`] then its entries), when
    /// boot flag [`super::flags::CPUID_TABLE`] is set.
    pub const CPUID_TABLE: u64 = 0xb000;
    /// Largest number of CPUID table entries (a page).
    pub const CPUID_TABLE_MAX: u64 = 0x1000 / 32 - 1;
    /// The [`super::CpuPreset`], when boot flag
    /// [`super::flags::CPU_PRESET`] is set.
    pub const CPU_PRESET: u64 = 0xc000;
    /// Most virtio devices a VM has (the kernel's table and its interrupt
    /// vectors; the page above holds more entries than this).
    pub const VIRTIO_DEVICES_MAX: usize = 16;
    /// Guest-physical base of the virtio-mmio register windows: 64 GiB,
    /// above anything RAM and the boot module can reach (at most
    /// [`BOOT_PDS_MAX`] GiB together), so never backed by a memory slot.
    pub const VIRTIO_MMIO_BASE: u64 = 64 << 30;
    /// Size of one device's register window (virtio 1.2 §4.2.2: registers
    /// up to 0x100, device configuration from 0x100).
    pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
    /// Interrupt vector of the first device; device `n` uses `+ n`. The
    /// VMM signals each device's interrupt as an MSI with this vector to
    /// the local APIC of vCPU 0.
    pub const VIRTIO_VECTOR_BASE: u32 = 0x50;
    /// Strings: command line, argv and envp blocks, program path.
    pub const STRINGS: u64 = 0x10000;
    /// Size of the string area.
    pub const STRINGS_SIZE: u64 = 0x10000;
    /// At most this many page directories in the boot page tables (so at
    /// most this many GiB of RAM and module).
    pub const BOOT_PDS_MAX: u64 = 64;
    /// The console buffer: the guest copies output here, then writes its
    /// length to a console port.
    pub const CONSOLE_BUFFER: u64 = 0x70000;
    /// Size of the console buffer.
    pub const CONSOLE_BUFFER_SIZE: u64 = 0x10000;
    /// Where the kernel image is loaded (its PT_LOAD physical addresses
    /// must lie at or above this).
    pub const KERNEL_LOAD: u64 = 0x10_0000;
    /// The low memory kiln-vmm offers as usable RAM: what lies between
    /// its boot data (the strings, the console buffer) and the kernel
    /// image. It shares the kernel image's 2 MiB, which the host backs
    /// with one huge page anyway, so a small program's first frames come
    /// from there instead of making the host zero another 2 MiB.
    pub const LOW_RAM: [(u64, u64); 2] = [
        (STRINGS + STRINGS_SIZE, CONSOLE_BUFFER),
        (CONSOLE_BUFFER + CONSOLE_BUFFER_SIZE, KERNEL_LOAD),
    ];
}

/// Virtual-memory layout shared by the VMM's boot page tables and the kernel.
pub mod vm {
    /// Virtual base of the kernel image mapping: physical `p` is mapped at
    /// `KERNEL_BASE + p` (the top 2 GiB, PML4 slot 511).
    pub const KERNEL_BASE: u64 = 0xffff_ffff_8000_0000;
    /// Virtual base of the direct map of all guest RAM (PML4 slot 273).
    /// Slot 256 is avoided: on the PVM host an instruction fetch there
    /// faults (see PVM.md, "Address-range rules").
    pub const PHYS_MAP: u64 = 0xffff_8880_0000_0000;
    /// PML4 slot of [`PHYS_MAP`].
    pub const PHYS_MAP_SLOT: usize = 273;
    /// PML4 slot of [`KERNEL_BASE`].
    pub const KERNEL_SLOT: usize = 511;
}

/// I/O ports of the kiln platform (`OUT` from the guest kernel).
pub mod port {
    /// 32-bit write: the first `value` bytes of the console buffer go to the
    /// VMM's standard output.
    pub const CONSOLE_STDOUT: u16 = 0x510;
    /// 32-bit write: the first `value` bytes of the console buffer go to the
    /// VMM's standard error.
    pub const CONSOLE_STDERR: u16 = 0x511;
    /// 32-bit write: a boot milestone ([`super::Milestone`]) was reached.
    pub const BOOT_TIMER: u16 = 0x520;
    /// 32-bit write: the program ended; the value is an [`super::ExitReport`]
    /// encoding. The VMM stops the VM.
    pub const EXIT: u16 = 0x530;
    /// 32-bit write: start vCPU `value` (1 to `vcpus - 1`) at the kernel's
    /// ELF entry with `rdi` = `value`, `rsi` = the boot-info address and
    /// `rdx` = its PVM registration page (0 off PVM). The VMM creates every
    /// vCPU at boot but runs the others only once the boot CPU asks, when
    /// the kernel has their stacks ready.
    pub const START_CPU: u16 = 0x540;
    /// 32-bit write of 0: this vCPU parks for a snapshot ([`super::snapshot`]).
    /// The VMM saves the VM once every running vCPU has parked, then lets
    /// the write return unchanged; a vCPU restored from the snapshot
    /// instead returns from it with `rax` = [`super::snapshot::RESUMED`]
    /// and the values listed there.
    pub const SNAPSHOT: u16 = 0x550;
    /// 32-bit write: a warm VM's boot CPU has touched this many pages of
    /// the running program ([`super::snapshot::hints::PREPARE`]), just
    /// before its resume report.
    pub const PREPARED: u16 = 0x560;
    /// QEMU `isa-debug-exit` device (`-device isa-debug-exit`): QEMU exits
    /// with status `value * 2 + 1`.
    pub const QEMU_DEBUG_EXIT: u16 = 0xf4;
    /// The first serial port (16550 UART), the console under QEMU.
    pub const COM1: u16 = 0x3f8;
}

/// Snapshots (`kiln run --snapshot-at`, `kiln snapshot`): the kernel parks
/// every running vCPU on [`port::SNAPSHOT`] at a point where its state is
/// whole (an interrupt handler, or the kernel's own request), the VMM saves
/// vCPUs, devices and memory, and a VM restored from them continues from
/// that `OUT` on every vCPU.
pub mod snapshot {
    /// The interrupt vector that asks a vCPU to park (the VMM sends it as
    /// an MSI to each running vCPU; the kernel as an IPI to the others
    /// when it asks for the snapshot itself).
    pub const VECTOR: u8 = 0x4e;
    /// `rax` after [`super::port::SNAPSHOT`] on a restored vCPU (0 when the
    /// VM that parked simply goes on). The restored vCPU also gets `rdi` =
    /// the host's wall-clock time in ns since the epoch, `rsi` = the guest
    /// TSC at that time, and `r8`..`r11` = 32 fresh random bytes (each
    /// clone its own), so the kernel can set its clock and reseed.
    pub const RESUMED: u64 = 1;
    /// Bits of `rdx` after [`super::port::SNAPSHOT`] on a restored vCPU:
    /// what the VMM asks of the resumed kernel before it reports itself
    /// resumed. A VMM that asks nothing leaves the port number there
    /// (`0x550`), whose low four bits are clear.
    pub mod hints {
        /// The VM will be held at its resume report until a run claims it
        /// (a warm VM, `kiln warm`): touch every page the running program
        /// has mapped now, so that on PVM the host shadows them before
        /// anyone waits instead of one exit per 32 KiB after the claim.
        pub const PREPARE: u64 = 1;
    }
    /// `kiln.snapshot_at=` values: when the kernel asks for a snapshot
    /// itself.
    pub mod at {
        /// Just before the program's first instruction.
        pub const PROGRAM_ENTRY: &str = "program-entry";
        /// Just before the program's own first instruction, after its
        /// dynamic loader has loaded and relocated its libraries (for a
        /// static program the same as [`PROGRAM_ENTRY`]).
        pub const AFTER_LOADER: &str = "after-loader";
        /// Right after the program's first write to standard output or
        /// error has reached the VMM.
        pub const FIRST_OUTPUT: &str = "first-output";
    }
}

/// Milestones reported through [`port::BOOT_TIMER`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Milestone {
    /// The kernel's first Rust code runs (after the PVM registration).
    KernelEntry = 1,
    /// The kernel is about to jump to the program's first instruction.
    ProgramEntry = 2,
    /// The program accepted its first connection from outside the guest
    /// (an AF_INET, AF_INET6 or AF_VSOCK accept).
    FirstAccept = 3,
    /// The boot CPU of a VM restored from a snapshot runs natively again
    /// where it parked, its clock and randomness renewed.
    Resumed = 4,
}

impl Milestone {
    /// Decodes a value written to [`port::BOOT_TIMER`].
    pub fn from_u32(value: u32) -> Option<Self> {
        match value {
            1 => Some(Self::KernelEntry),
            2 => Some(Self::ProgramEntry),
            3 => Some(Self::FirstAccept),
            4 => Some(Self::Resumed),
            _ => None,
        }
    }
}

/// How the guest's program (or the guest kernel) ended, as written to
/// [`port::EXIT`]: `kind << 8 | code`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitReport {
    /// The program called `exit`/`exit_group` with this status (low 8 bits).
    Exited(u8),
    /// The program was killed by this signal number.
    Signaled(u8),
    /// The guest kernel panicked (its message went to the console first).
    KernelPanic,
    /// The program exists but cannot be started (not an x86-64 ELF, …).
    CannotExecute,
    /// The program does not exist.
    NotFound,
}

impl ExitReport {
    /// Encodes the report as the 32-bit port value.
    pub fn encode(self) -> u32 {
        match self {
            Self::Exited(code) => u32::from(code),
            Self::Signaled(signal) => 1 << 8 | u32::from(signal),
            Self::KernelPanic => 2 << 8,
            Self::CannotExecute => 3 << 8,
            Self::NotFound => 4 << 8,
        }
    }

    /// Decodes a 32-bit port value; `None` for values no kernel writes.
    pub fn decode(value: u32) -> Option<Self> {
        let code = (value & 0xff) as u8;
        match value >> 8 {
            0 => Some(Self::Exited(code)),
            1 if code != 0 && code < 128 => Some(Self::Signaled(code)),
            2 if code == 0 => Some(Self::KernelPanic),
            3 if code == 0 => Some(Self::CannotExecute),
            4 if code == 0 => Some(Self::NotFound),
            _ => None,
        }
    }

    /// The process exit status a container runtime would give
    /// (`docker run` conventions): the program's own status, 128+N for
    /// signal N, 125 for a kernel failure, 126 when the program cannot be
    /// executed, 127 when it does not exist.
    pub fn exit_status(self) -> u8 {
        match self {
            Self::Exited(code) => code,
            Self::Signaled(signal) => 128u8.saturating_add(signal),
            Self::KernelPanic => 125,
            Self::CannotExecute => 126,
            Self::NotFound => 127,
        }
    }
}

/// Bits of [`BootInfo::flags`].
pub mod flags {
    /// The host KVM is the PVM flavour: each vCPU must register its PV page
    /// (MSR [`super::msr::PVM_REGISTER`]) before anything else, and the
    /// interrupt flag is byte 0 of that page.
    pub const PVM: u64 = 1 << 0;
    /// Print every system call on the console's stderr (`--trace-syscalls`).
    pub const TRACE_SYSCALLS: u64 = 1 << 1;
    /// The console is a terminal (`-t`): standard input, output and error
    /// are one terminal, all on the first console device.
    pub const TERMINAL: u64 = 1 << 2;
    /// A [`super::CpuidTable`] is at [`super::layout::CPUID_TABLE`], what
    /// the CPUID instruction answered in an earlier VM of this host (see
    /// [`CPUID_LEARN`]): the kernel answers CPUID questions from it, as on
    /// PVM each CPUID instruction is emulated by the host (~20 µs).
    pub const CPUID_TABLE: u64 = 1 << 3;
    /// kiln-vmm has no CPUID table for this host yet: the kernel fills the
    /// page at [`super::layout::CPUID_TABLE`] with what the instruction
    /// answers (head `source` [`super::CpuidTable::LEARNT`]) and kiln-vmm
    /// keeps it for the next VMs.
    pub const CPUID_LEARN: u64 = 1 << 4;
    /// kiln-vmm loaded every vCPU with the state the kernel's
    /// [`super::CpuStateNote`] asks for (GDTR, IDTR, TR, STAR, LSTAR,
    /// SFMASK, GS base) and wrote a [`super::CpuPreset`] at
    /// [`super::layout::CPU_PRESET`] with CR3, CR4 and XCR0 as it set them:
    /// the kernel skips the instructions that would load them (on PVM each
    /// is emulated by the host, ~20 µs).
    pub const CPU_PRESET: u64 = 1 << 5;
    /// kiln-vmm needs no kernel-entry, program-entry or first-accept
    /// milestone (nobody asked for the run's phases, exit counts, a
    /// snapshot or a standby, and no CPUID table is being learnt): the
    /// kernel skips those port writes, each an exit to kiln-vmm.
    pub const QUIET_MILESTONES: u64 = 1 << 6;
}

/// Model-specific registers of the PVM host flavour (PVM.md).
pub mod msr {
    /// PV registration: the guest writes `page_gpa | flags` from CPL0; after
    /// that its CPL0 code runs natively.
    pub const PVM_REGISTER: u32 = 0x4b56_4d10;
    /// Read-only signature: reads [`PVM_SIGNATURE_VALUE`] on a PVM host.
    pub const PVM_SIGNATURE: u32 = 0x4b56_4d11;
    /// The value of [`PVM_SIGNATURE`]: "PVM" in ASCII.
    pub const PVM_SIGNATURE_VALUE: u64 = 0x4d_5650;
}

/// Kinds of [`MemoryRegion`].
pub mod region {
    /// RAM the kernel may allocate from.
    pub const USABLE: u32 = 1;
    /// RAM holding boot data or the kernel image: not allocatable.
    pub const RESERVED: u32 = 2;
    /// The boot module (the program), read-only, possibly above RAM: the
    /// VMM maps the program's file there instead of copying it.
    pub const MODULE: u32 = 3;
    /// The VMM's boot page tables, in the page-table area: the rest of
    /// the 2 MiB-aligned 2 MiB that holds them is where the kernel puts its
    /// own page tables (see `layout::PAGE_TABLE_AREA_MIN_RAM`). Not
    /// allocatable itself.
    pub const PAGE_TABLES: u32 = 4;
}

/// The head of the CPUID table: `count` [`CpuidEntry`] values follow,
/// what the CPUID instruction answered on vCPU 0 of a VM of this host once
/// its kernel had set CR4 and XCR0 up (on PVM the instruction does not
/// answer from the `KVM_SET_CPUID2` table, so only the instruction can
/// say). Leaves that depend on the CPU asking (APIC IDs) are left out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct CpuidTable {
    /// Entries that follow (at most `layout::CPUID_TABLE_MAX`).
    pub count: u32,
    /// [`CpuidTable::LEARNT`] once a kernel has filled the table.
    pub source: u32,
    /// Zero.
    pub reserved: [u32; 6],
}

impl CpuidTable {
    /// `source` of a table the kernel filled ("CPUL").
    pub const LEARNT: u32 = u32::from_le_bytes(*b"CPUL");
}

/// What kiln-vmm loaded into every vCPU (boot flag
/// [`flags::CPU_PRESET`]), at [`layout::CPU_PRESET`]: the kernel note's
/// registers, and CR3, CR4 and XCR0. CR4 and XCR0 are kiln-vmm's best
/// guess of what the kernel wants (from the learnt [`CpuidTable`]); the
/// kernel changes them where it wants otherwise. A vCPU a snapshot's
/// restore starts fresh gets the same state from this page.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct CpuPreset {
    /// [`CpuPreset::MAGIC`].
    pub magic: u32,
    /// Zero.
    pub reserved: u32,
    /// CR3: the boot PML4.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// XCR0 (0: not set, the kernel sets it with XSETBV when it wants one).
    pub xcr0: u64,
    /// 1: the local APIC is in x2APIC mode with the note's SVR and LVT
    /// timer (TSC-deadline mode); 0: the kernel sets it up.
    pub apic: u64,
    /// The registers the kernel's note asked for.
    pub state: CpuStateNote,
}

impl CpuPreset {
    /// `magic` of a preset page ("CPUP").
    pub const MAGIC: u32 = u32::from_le_bytes(*b"CPUP");
}

/// The kernel's request for its CPU state, in an ELF note (name
/// [`CpuStateNote::NAME`], type [`CpuStateNote::TYPE`]): a VMM that reads
/// it loads these registers into each vCPU before it starts, and says so
/// with boot flag [`flags::CPU_PRESET`]. Addresses are kernel virtual
/// addresses; vCPU `n`'s TSS, TSS selector and GS base are the first
/// ones plus `n` strides. Every field is a little-endian u64.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct CpuStateNote {
    /// [`CpuStateNote::VERSION`].
    pub version: u64,
    /// vCPUs the kernel has TSS and per-CPU areas for.
    pub max_cpus: u64,
    /// GDTR base.
    pub gdt_base: u64,
    /// GDTR limit.
    pub gdt_limit: u64,
    /// IDTR base.
    pub idt_base: u64,
    /// IDTR limit.
    pub idt_limit: u64,
    /// TR base of vCPU 0 (a 64-bit TSS).
    pub tss_base: u64,
    /// Bytes from one vCPU's TSS to the next.
    pub tss_stride: u64,
    /// TR limit.
    pub tss_limit: u64,
    /// TR selector of vCPU 0.
    pub tss_selector: u64,
    /// Added to the TR selector per vCPU.
    pub tss_selector_stride: u64,
    /// MSR STAR.
    pub star: u64,
    /// MSR LSTAR (the SYSCALL entry).
    pub lstar: u64,
    /// MSR SFMASK.
    pub sfmask: u64,
    /// GS base (MSR 0xc000_0101) of vCPU 0: its per-CPU area.
    pub gs_base: u64,
    /// Bytes from one vCPU's per-CPU area to the next.
    pub gs_stride: u64,
    /// The local APIC's spurious-interrupt vector register in x2APIC
    /// mode (0: leave the APIC to the kernel).
    pub apic_svr: u64,
    /// The local APIC's LVT timer register (TSC-deadline mode).
    pub apic_lvt_timer: u64,
}

impl CpuStateNote {
    /// The note's name (with its NUL, as ELF notes count it).
    pub const NAME: &'static [u8] = b"kiln\0";
    /// The note's type.
    pub const TYPE: u32 = 1;
    /// `version` of this layout.
    pub const VERSION: u64 = 1;
    /// Size of the descriptor in bytes.
    pub const SIZE: usize = core::mem::size_of::<CpuStateNote>();
}

/// One CPUID leaf (and subleaf) of the [`CpuidTable`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct CpuidEntry {
    /// The leaf (EAX).
    pub function: u32,
    /// The subleaf (ECX), when [`CpuidEntry::SIGNIFICANT_INDEX`] is set.
    pub index: u32,
    /// [`CpuidEntry::SIGNIFICANT_INDEX`] or 0.
    pub flags: u32,
    /// EAX.
    pub eax: u32,
    /// EBX.
    pub ebx: u32,
    /// ECX.
    pub ecx: u32,
    /// EDX.
    pub edx: u32,
    /// Zero.
    pub reserved: u32,
}

impl CpuidEntry {
    /// The subleaf selects the entry (leaves 4, 7, 0xB, 0xD, …).
    pub const SIGNIFICANT_INDEX: u32 = 1;
}

/// One entry of the memory map.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct MemoryRegion {
    /// Guest-physical start.
    pub addr: u64,
    /// Length in bytes.
    pub len: u64,
    /// One of the [`region`] kinds.
    pub kind: u32,
    /// Zero.
    pub reserved: u32,
}

/// The versioned boot-info structure at [`layout::BOOT_INFO`]; `rsi` holds
/// its guest-physical address at kernel entry. All addresses are
/// guest-physical. String blocks are sequences of NUL-terminated strings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct BootInfo {
    /// [`BOOT_INFO_MAGIC`].
    pub magic: u64,
    /// [`BOOT_INFO_VERSION`].
    pub version: u32,
    /// `size_of::<BootInfo>()` as the VMM saw it.
    pub size: u32,
    /// [`flags`] bits.
    pub flags: u64,
    /// Memory map: address of the first [`MemoryRegion`].
    pub memory_map_addr: u64,
    /// Number of memory map entries.
    pub memory_map_count: u64,
    /// Kernel command line (not NUL-terminated), kernel options only.
    pub cmdline_addr: u64,
    /// Length of the command line.
    pub cmdline_len: u64,
    /// The program's bytes (the boot module), physically contiguous and
    /// read-only, inside a [`region::MODULE`] memory-map entry.
    pub module_addr: u64,
    /// Length of the program's bytes; 0 when there is none.
    pub module_len: u64,
    /// The program's path inside the guest (not NUL-terminated).
    pub module_path_addr: u64,
    /// Length of the path.
    pub module_path_len: u64,
    /// argv block (`argv[0]` first).
    pub argv_addr: u64,
    /// Length of the argv block in bytes.
    pub argv_len: u64,
    /// Number of strings in the argv block.
    pub argc: u64,
    /// envp block.
    pub envp_addr: u64,
    /// Length of the envp block in bytes.
    pub envp_len: u64,
    /// Number of strings in the envp block.
    pub envc: u64,
    /// Host wall-clock time (ns since the Unix epoch) at [`BootInfo::boot_tsc`].
    pub boot_realtime_ns: u64,
    /// Guest TSC value at which [`BootInfo::boot_realtime_ns`] was taken.
    pub boot_tsc: u64,
    /// TSC frequency in kHz (0 when unknown).
    pub tsc_khz: u64,
    /// Entropy from the host, for getrandom when RDRAND is missing.
    pub random_seed: [u8; 32],
    /// Console buffer address (see [`port::CONSOLE_STDOUT`]).
    pub console_addr: u64,
    /// Console buffer size.
    pub console_len: u64,
    /// Number of vCPUs.
    pub vcpus: u64,
    /// Total guest RAM in bytes (RAM starts at 0; a module may lie above).
    pub memory_size: u64,
    /// The virtio device table: address of the first [`VirtioDevice`].
    pub devices_addr: u64,
    /// Number of device table entries.
    pub devices_count: u64,
}

/// Virtio device types (virtio 1.2 §5).
pub mod virtio_id {
    /// Network card.
    pub const NET: u32 = 1;
    /// Block device.
    pub const BLOCK: u32 = 2;
    /// Console.
    pub const CONSOLE: u32 = 3;
    /// Entropy source.
    pub const RNG: u32 = 4;
    /// Shared directory (virtio-fs).
    pub const FS: u32 = 26;
    /// Socket device (vsock).
    pub const VSOCK: u32 = 19;
}

/// What a virtio device is for, when the type alone does not say
/// ([`VirtioDevice::role`]).
pub mod role {
    /// The only device of its type, or the first.
    pub const DEFAULT: u32 = 0;
    /// A console carrying the program's standard error.
    pub const CONSOLE_STDERR: u32 = 1;
}

/// One virtio-mmio device, as the boot-info device table lists it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct VirtioDevice {
    /// Guest-physical base of its register window.
    pub base: u64,
    /// Size of the window.
    pub size: u64,
    /// The feature bits the device offers (what DeviceFeatures would say).
    pub features: u64,
    /// Its [`virtio_id`] type.
    pub device_type: u32,
    /// The local-APIC vector its interrupts arrive on.
    pub vector: u32,
    /// Its [`role`].
    pub role: u32,
    /// The largest size of each of its queues (what QueueNumMax would say).
    pub queue_max: u32,
}

/// kiln's one addition to the virtio-mmio registers: a driver that knows
/// the device from the boot info (features, queue sizes) may skip the
/// register-by-register setup — each register access is an exit to the
/// VMM, tens of microseconds on some hosts — and write here, once, the
/// guest-physical page number of a [`Setup`] block instead. The device then
/// takes the features and queues from the block and starts as if the
/// driver had set ACKNOWLEDGE, DRIVER, FEATURES_OK and DRIVER_OK; a block
/// it cannot accept leaves it DEVICE_NEEDS_RESET. The offset lies in the
/// range virtio 1.2 §4.2.2 leaves reserved.
pub const VIRTIO_MMIO_KILN_SETUP: u64 = 0x0f0;

/// The block [`VIRTIO_MMIO_KILN_SETUP`] points at: this header, then
/// `queue_count` [`SetupQueue`] entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Setup {
    /// The features the driver accepts (VIRTIO_F_VERSION_1 included).
    pub driver_features: u64,
    /// Number of queue entries that follow (every queue of the device).
    pub queue_count: u32,
    /// Zero.
    pub reserved: u32,
}

/// One queue of a [`Setup`] block.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct SetupQueue {
    /// Its size (entries), at most the device's `queue_max`.
    pub size: u32,
    /// Zero.
    pub reserved: u32,
    /// Guest-physical address of the descriptor table.
    pub desc: u64,
    /// Guest-physical address of the driver (available) ring.
    pub driver: u64,
    /// Guest-physical address of the device (used) ring.
    pub device: u64,
}

/// The virtio-vsock packet header (virtio 1.2 §5.10.6), which kiln-vmm's
/// device and the kernel's driver both read and write: 44 bytes, little
/// endian, before every packet's payload.
pub mod vsock {
    /// The host's context id (what the guest connects to).
    pub const HOST_CID: u64 = 2;
    /// The guest's context id unless the run names another.
    pub const DEFAULT_GUEST_CID: u64 = 3;
    /// Bytes of a header.
    pub const HEADER_SIZE: usize = 44;
    /// VIRTIO_VSOCK_TYPE_STREAM: the one socket type kiln carries.
    pub const TYPE_STREAM: u16 = 1;

    /// Packet operations (`op`).
    pub mod op {
        /// Connection request.
        pub const REQUEST: u16 = 1;
        /// Connection accepted.
        pub const RESPONSE: u16 = 2;
        /// Connection refused or torn down.
        pub const RST: u16 = 3;
        /// The sender will not send (`flags` SEND) or receive (RCV) more.
        pub const SHUTDOWN: u16 = 4;
        /// Data.
        pub const RW: u16 = 5;
        /// The sender's buffer space (`buf_alloc`, `fwd_cnt`), unasked.
        pub const CREDIT_UPDATE: u16 = 6;
        /// Asks the peer for a CREDIT_UPDATE.
        pub const CREDIT_REQUEST: u16 = 7;
    }

    /// SHUTDOWN flags.
    pub mod shutdown {
        /// The sender will receive no more.
        pub const RCV: u32 = 1;
        /// The sender will send no more.
        pub const SEND: u32 = 2;
        /// Both.
        pub const BOTH: u32 = RCV | SEND;
    }

    /// A packet header.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Header {
        /// Sender's context id.
        pub src_cid: u64,
        /// Receiver's context id.
        pub dst_cid: u64,
        /// Sender's port.
        pub src_port: u32,
        /// Receiver's port.
        pub dst_port: u32,
        /// Payload bytes that follow.
        pub len: u32,
        /// Socket type ([`TYPE_STREAM`]).
        pub kind: u16,
        /// Operation ([`op`]).
        pub op: u16,
        /// Operation flags ([`shutdown`] for SHUTDOWN).
        pub flags: u32,
        /// The sender's receive buffer for this connection, in bytes.
        pub buf_alloc: u32,
        /// Bytes of this connection the sender has consumed so far
        /// (wrapping).
        pub fwd_cnt: u32,
    }

    impl Header {
        /// The header's bytes.
        pub fn encode(&self) -> [u8; HEADER_SIZE] {
            let mut b = [0u8; HEADER_SIZE];
            b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
            b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
            b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
            b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
            b[24..28].copy_from_slice(&self.len.to_le_bytes());
            b[28..30].copy_from_slice(&self.kind.to_le_bytes());
            b[30..32].copy_from_slice(&self.op.to_le_bytes());
            b[32..36].copy_from_slice(&self.flags.to_le_bytes());
            b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
            b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
            b
        }

        /// The header at the start of `b`, if `b` is long enough.
        pub fn decode(b: &[u8]) -> Option<Self> {
            let b: &[u8; HEADER_SIZE] = b.get(..HEADER_SIZE)?.try_into().ok()?;
            let u64_at = |at: usize| {
                let mut v = [0u8; 8];
                v.copy_from_slice(&b[at..at + 8]);
                u64::from_le_bytes(v)
            };
            let u32_at = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
            let u16_at = |at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
            Some(Self {
                src_cid: u64_at(0),
                dst_cid: u64_at(8),
                src_port: u32_at(16),
                dst_port: u32_at(20),
                len: u32_at(24),
                kind: u16_at(28),
                op: u16_at(30),
                flags: u32_at(32),
                buf_alloc: u32_at(36),
                fwd_cnt: u32_at(40),
            })
        }
    }
}

impl BootInfo {
    /// Size of the structure in bytes.
    pub const SIZE: usize = core::mem::size_of::<BootInfo>();
}

/// Iterates over the NUL-terminated strings of a string block.
pub fn split_block(block: &[u8]) -> impl Iterator<Item = &[u8]> {
    let trimmed = block.strip_suffix(&[0]).unwrap_or(block);
    trimmed
        .split(|&b| b == 0)
        .filter(move |_| !block.is_empty())
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    #[test]
    fn the_page_table_area_is_the_2_mib_holding_the_boot_tables() {
        use layout::{boot_page_tables_at, page_table_area};
        const MIB: u64 = 1 << 20;
        assert_eq!(page_table_area(15 * MIB, 16 * MIB), None);
        assert_eq!(
            page_table_area(32 * MIB, 35 * MIB),
            Some((30 * MIB, 32 * MIB))
        );
        // RAM ending inside a 2 MiB range: the area is cut at its end.
        assert_eq!(
            page_table_area(17 * MIB, 18 * MIB),
            Some((16 * MIB, 17 * MIB))
        );
        for ram in [16, 17, 64, 1024] {
            let (start, end) = page_table_area(ram * MIB, ram * MIB + MIB).unwrap();
            let tables = boot_page_tables_at(ram * MIB, ram * MIB + MIB);
            assert!(start <= tables && tables < end && end == ram * MIB);
        }
    }

    #[test]
    fn vsock_header_round_trips() {
        let h = vsock::Header {
            src_cid: 3,
            dst_cid: vsock::HOST_CID,
            src_port: 1025,
            dst_port: 5000,
            len: 17,
            kind: vsock::TYPE_STREAM,
            op: vsock::op::RW,
            flags: 0,
            buf_alloc: 256 << 10,
            fwd_cnt: 0xffff_fff0,
        };
        let b = h.encode();
        assert_eq!(vsock::Header::decode(&b), Some(h));
        assert_eq!(&b[16..20], &1025u32.to_le_bytes());
        assert_eq!(vsock::Header::decode(&b[..43]), None);
    }

    #[test]
    fn exit_report_round_trips() {
        for report in [
            ExitReport::Exited(0),
            ExitReport::Exited(255),
            ExitReport::Signaled(11),
            ExitReport::KernelPanic,
            ExitReport::CannotExecute,
            ExitReport::NotFound,
        ] {
            assert_eq!(ExitReport::decode(report.encode()), Some(report));
        }
        assert_eq!(ExitReport::decode(5 << 8), None);
        assert_eq!(ExitReport::decode(1 << 8), None);
    }

    #[test]
    fn exit_status_follows_docker() {
        assert_eq!(ExitReport::Exited(42).exit_status(), 42);
        assert_eq!(ExitReport::Signaled(11).exit_status(), 139);
        assert_eq!(ExitReport::KernelPanic.exit_status(), 125);
        assert_eq!(ExitReport::CannotExecute.exit_status(), 126);
        assert_eq!(ExitReport::NotFound.exit_status(), 127);
    }

    #[test]
    fn boot_info_layout_is_stable() {
        assert_eq!(BootInfo::SIZE, 240);
        assert_eq!(core::mem::size_of::<VirtioDevice>(), 40);
        assert_eq!(core::mem::size_of::<Setup>(), 16);
        assert_eq!(core::mem::size_of::<SetupQueue>(), 32);
        assert_eq!(core::mem::size_of::<MemoryRegion>(), 24);
        assert_eq!(core::mem::size_of::<CpuidTable>(), 32);
        assert_eq!(core::mem::size_of::<CpuidEntry>(), 32);
        assert_eq!(
            32 * (1 + layout::CPUID_TABLE_MAX),
            0x1000,
            "the table fills its page"
        );
    }

    #[test]
    fn split_block_yields_each_string() {
        let v: Vec<&[u8]> = split_block(b"a\0bc\0\0d\0").collect();
        assert_eq!(v, [&b"a"[..], b"bc", b"", b"d"]);
        assert_eq!(split_block(b"").count(), 0);
    }
}
