//! The kernel's entry points, the PVH ELF note and the multiboot2 header.
//!
//! * `_start` (the ELF entry): kiln-vmm starts every vCPU here directly in
//!   64-bit mode with its boot page tables, `rdi` = the vCPU's index, `rsi`
//!   = boot-info address and `rdx` = the vCPU's PVM registration page (0
//!   when the host is not PVM). vCPU 0 goes on to `kernel_start`, the
//!   others (started later by the kernel, `smp.rs`) to `ap_start`.
//!   On PVM every instruction before the registration WRMSR is emulated, so
//!   that WRMSR comes first.
//! * `pvh_start32` (named by the Xen PVH note, how QEMU's `-kernel` boots
//!   an ELF): 32-bit protected mode without paging, `ebx` = the
//!   `hvm_start_info` address. It builds boot page tables equivalent to
//!   kiln-vmm's (identity and direct map of the first 4 GiB, kernel map),
//!   enters long mode and joins the common path.
//!
//! * `multiboot2_start32` (named by the multiboot2 header's entry-address
//!   tag; GRUB's `multiboot2` command, how an exported UEFI disk boots):
//!   the same 32-bit state, `eax` = the multiboot2 magic and `ebx` = the
//!   boot information. It shares `pvh_start32`'s path from there.
//!
//! Both 32-bit entries map the first 4 GiB (where a boot loader may put
//! the modules and its tables), identity and direct map, with 2 MiB pages.
//!
//! All call `kernel_start(platform, info_phys, pv_page)` on the boot stack.

use core::arch::global_asm;

/// `kernel_start`'s `platform` value for kiln-vmm.
pub const PLATFORM_KILN: u64 = 1;
/// `kernel_start`'s `platform` value for a PVH boot (QEMU).
pub const PLATFORM_PVH: u64 = 2;
/// `kernel_start`'s `platform` value for a multiboot2 boot (GRUB).
pub const PLATFORM_MULTIBOOT2: u64 = 3;

/// What a multiboot2 loader puts in `eax`.
const MULTIBOOT2_LOADER_MAGIC: u32 = 0x36d7_6289;
/// Gigabytes of physical memory the 32-bit entries map.
pub const BOOT_MAP_GIB: u64 = 4;

/// Size of the boot stack, which later serves as the syscall stack. Boot
/// alone used 60 KiB of it for a static hello (measured: the ELF loader and
/// device setup keep large values on the stack) and 76 KiB with a disk, a
/// volume and a NIC; at 64 KiB the overflow ran into other data and ended
/// in a silent double panic. Only the pages touched cost guest memory.
/// 192 KiB (2.5 times the most measured) keeps the stack's top, and with
/// it everything the boot touches in the kernel image, below 2 MiB
/// (linker.ld): the host then backs the kernel and the low RAM with one
/// huge page where a larger stack made it zero a second one.
pub const KERNEL_STACK_SIZE: usize = 192 * 1024;

/// A page-aligned, zero-initialised page table for the PVH boot path.
#[repr(C, align(4096))]
pub struct BootTable(pub [u64; 512]);

/// Page tables built by the 32-bit entries (kiln-vmm provides its own).
/// In `.bss.~cold`, which the linker puts last: a kiln-vmm boot never
/// touches them, so they may lie past the image's first 2 MiB.
#[no_mangle]
#[link_section = ".bss.~cold"]
static mut PVH_PML4: BootTable = BootTable([0; 512]);
#[no_mangle]
#[link_section = ".bss.~cold"]
static mut PVH_PDPT_LOW: BootTable = BootTable([0; 512]);
#[no_mangle]
#[link_section = ".bss.~cold"]
static mut PVH_PDPT_HIGH: BootTable = BootTable([0; 512]);
/// One page directory per GiB of [`BOOT_MAP_GIB`], contiguous.
#[no_mangle]
#[link_section = ".bss.~cold"]
static mut PVH_PD: [BootTable; BOOT_MAP_GIB as usize] =
    [const { BootTable([0; 512]) }; BOOT_MAP_GIB as usize];

/// The boot (and syscall) stack.
#[repr(C, align(16))]
pub struct Stack<const N: usize>(pub [u8; N]);

/// The kernel stack: boot code runs on it, then every system call. In
/// `.bss.~stack`, after the rest of `.bss`: only its top is touched, so
/// the pages used lie together below it.
#[no_mangle]
#[link_section = ".bss.~stack"]
pub static mut KERNEL_STACK: Stack<KERNEL_STACK_SIZE> = Stack([0; KERNEL_STACK_SIZE]);

global_asm!(
    r#"
    .set KB, 0xffffffff80000000

    .section .note.Xen, "a"
    .balign 4
    .long 4
    .long 4
    .long 18                    /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .long pvh_start32 - KB
    .balign 4

    .section .text.boot, "ax"
    .code64
    .globl _start
_start:
    test rdx, rdx
    jz 1f
    mov r8, rdx
    mov rax, rdx
    or rax, {cr2_cell}          /* PVM: host stores #PF addresses in the page */
    shr rdx, 32
    mov ecx, {pvm_register}
    wrmsr
    mov rdx, r8
1:  test rdi, rdi
    jnz 3f
    lea rsp, [rip + KERNEL_STACK + {stack_size}]
    mov edi, {kiln}
    call kernel_start
    ud2
    /* Another vCPU (rdi = its index), started by the boot CPU */
3:  mov rsp, [rip + AP_BOOT_STACK]
    mov rsi, rdx
    call ap_start
    ud2

    /* The multiboot2 header (within the file's first 32 KiB): ask for the
       command line, modules, memory map and ACPI tables (all optional to
       the loader) and name the 32-bit entry. */
    .section .multiboot2, "a"
    .balign 8
mb2_header:
    .long 0xe85250d6            /* magic */
    .long 0                     /* architecture: i386 (32-bit protected) */
    .long mb2_header_end - mb2_header
    .long 0x100000000 - (0xe85250d6 + (mb2_header_end - mb2_header))
    .balign 8
    .word 1                     /* information request */
    .word 1                     /* optional */
    .long 8 + 5 * 4
    .long 1, 3, 6, 14, 15       /* cmdline, modules, mmap, ACPI old, new */
    .balign 8
    .word 3                     /* entry address */
    .word 0
    .long 12
    .long multiboot2_start32 - KB
    .balign 8
    .word 5                     /* framebuffer: any mode (the kernel does */
    .word 1                     /* not draw; without it GRUB on UEFI warns */
    .long 20                    /* on the console that the OS gets none) */
    .long 0, 0, 0
    .balign 8
    .word 0                     /* end */
    .word 0
    .long 8
mb2_header_end:

    .section .text.boot, "ax"
    .code32
    .globl multiboot2_start32
multiboot2_start32:
    cli
    cmp eax, {mb2_magic}
    jne 4f
    mov ebp, {multiboot2}
    jmp 5f
4:  hlt                         /* not started by a multiboot2 loader */
    jmp 4b

    .globl pvh_start32
pvh_start32:
    mov ebp, {pvh}
5:  cli
    cld
    mov esi, ebx
    /* PDs: 512 x 2 MiB pages per GiB, identity from 0 */
    mov edi, offset PVH_PD - KB
    mov eax, 0x83
    mov ecx, 512 * {map_gib}
2:  mov [edi], eax
    mov dword ptr [edi + 4], 0
    add eax, 0x200000
    add edi, 8
    dec ecx
    jnz 2b
    /* PDPT_LOW[i] = PD[i]; the kernel image's slot maps the first GiB */
    mov edi, offset PVH_PDPT_LOW - KB
    mov eax, offset PVH_PD - KB
    or eax, 3
    mov [PVH_PDPT_HIGH - KB + 510 * 8], eax
    mov ecx, {map_gib}
6:  mov [edi], eax
    add eax, 0x1000
    add edi, 8
    dec ecx
    jnz 6b
    mov eax, offset PVH_PDPT_LOW - KB
    or eax, 3
    mov [PVH_PML4 - KB], eax               /* identity, dropped later */
    mov [PVH_PML4 - KB + 273 * 8], eax     /* direct map */
    mov eax, offset PVH_PDPT_HIGH - KB
    or eax, 3
    mov [PVH_PML4 - KB + 511 * 8], eax     /* kernel image */
    mov eax, cr4
    or eax, 0x620               /* PAE | OSFXSR | OSXMMEXCPT */
    mov cr4, eax
    mov eax, offset PVH_PML4 - KB
    mov cr3, eax
    mov ecx, 0xc0000080
    rdmsr
    or eax, 0x901               /* SCE | LME | NXE */
    wrmsr
    mov eax, cr0
    and eax, 0xfffffffb         /* no x87 emulation */
    or eax, 0x80010023          /* PG | WP | NE | MP | PE */
    mov cr0, eax
    lgdt [pvh_gdt_ptr - KB]
    .byte 0xea                  /* ljmp 0x10:pvh_start64 */
    .long pvh_start64 - KB
    .word 0x10

    .code64
pvh_start64:
    mov ax, 0x18
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    movabs rax, offset pvh_high
    jmp rax
pvh_high:
    lea rsp, [rip + KERNEL_STACK + {stack_size}]
    mov esi, esi
    xor edx, edx
    mov edi, ebp
    call kernel_start
    ud2

    .balign 8
pvh_gdt:
    .quad 0
    .quad 0
    .quad 0x00af9b000000ffff    /* 0x10: 64-bit code */
    .quad 0x00cf93000000ffff    /* 0x18: data */
pvh_gdt_ptr:
    .word pvh_gdt_ptr - pvh_gdt - 1
    .long pvh_gdt - KB
    .text
"#,
    stack_size = const KERNEL_STACK_SIZE,
    kiln = const PLATFORM_KILN,
    pvh = const PLATFORM_PVH,
    multiboot2 = const PLATFORM_MULTIBOOT2,
    mb2_magic = const MULTIBOOT2_LOADER_MAGIC,
    map_gib = const BOOT_MAP_GIB,
    cr2_cell = const super::pvm::FLAG_CR2_CELL,
    pvm_register = const super::pvm::REGISTER_MSR,
);
