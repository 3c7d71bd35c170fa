//! The kernel's two entry points and the PVH ELF note.
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
//!   kiln-vmm's (identity, direct map and kernel map of the first GiB),
//!   enters long mode and joins the common path.
//!
//! Both call `kernel_start(platform, info_phys, pv_page)` on the boot stack.

use core::arch::global_asm;

/// `kernel_start`'s `platform` value for kiln-vmm.
pub const PLATFORM_KILN: u64 = 1;
/// `kernel_start`'s `platform` value for a PVH boot (QEMU).
pub const PLATFORM_PVH: u64 = 2;

/// Size of the boot stack, which later serves as the syscall stack. Boot
/// alone used 60 KiB of it for a static hello (measured: the ELF loader and
/// device setup keep large values on the stack) and 76 KiB with a disk, a
/// volume and a NIC; at 64 KiB the overflow ran into other data and ended
/// in a silent double panic. Only the pages touched cost guest memory.
pub const KERNEL_STACK_SIZE: usize = 256 * 1024;

/// A page-aligned, zero-initialised page table for the PVH boot path.
#[repr(C, align(4096))]
pub struct BootTable(pub [u64; 512]);

/// Page tables built by `pvh_start32` (kiln-vmm provides its own).
#[no_mangle]
static mut PVH_PML4: BootTable = BootTable([0; 512]);
#[no_mangle]
static mut PVH_PDPT_LOW: BootTable = BootTable([0; 512]);
#[no_mangle]
static mut PVH_PDPT_HIGH: BootTable = BootTable([0; 512]);
#[no_mangle]
static mut PVH_PD: BootTable = BootTable([0; 512]);

/// The boot (and syscall) stack.
#[repr(C, align(16))]
pub struct Stack<const N: usize>(pub [u8; N]);

/// The kernel stack: boot code runs on it, then every system call.
#[no_mangle]
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

    .code32
    .globl pvh_start32
pvh_start32:
    cli
    cld
    mov esi, ebx
    /* PD: 512 x 2 MiB pages covering the first GiB */
    mov edi, offset PVH_PD - KB
    mov eax, 0x83
    mov ecx, 512
2:  mov [edi], eax
    mov dword ptr [edi + 4], 0
    add eax, 0x200000
    add edi, 8
    dec ecx
    jnz 2b
    mov eax, offset PVH_PD - KB
    or eax, 3
    mov [PVH_PDPT_LOW - KB], eax
    mov [PVH_PDPT_HIGH - KB + 510 * 8], eax
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
    mov edi, {pvh}
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
    cr2_cell = const super::pvm::FLAG_CR2_CELL,
    pvm_register = const super::pvm::REGISTER_MSR,
);
