//! System-call rewriting: when a SYSCALL instruction has trapped a few
//! times ([`HOT`]), its site is checked (`kiln_kernel::syscall::site`) and,
//! when the instructions just before it can move (a `mov eax, imm32`, or
//! register and stack moves such as read's `mov edi, [rsp+8]; xor eax, eax`,
//! five bytes or more), they are replaced by a jump to a trampoline that
//! runs them and enters the kernel with a plain jump. Every later call from that site skips the trap to the host
//! (~1.2 µs on PVM). Sites run once or twice (most of a program's
//! start-up) are not worth the check, which costs tens of microseconds.
//!
//! A trampoline (in a `[kiln-syscall]` page within ±2 GiB of the site)
//! does what the SYSCALL would have, then jumps to the kernel entry:
//!
//! ```text
//! mov eax, NN              the moved instruction(s)
//! lea rsp, [rsp - 128]     stay clear of the program's red zone
//! pushfq; pop r11          R11 = RFLAGS, as SYSCALL sets it
//! mov rcx, SITE + 2        RCX = the return address, as SYSCALL sets it
//! jmp [syscall_call_entry]
//! ```
//!
//! The entry puts RSP back and builds the same frame as a trapped SYSCALL,
//! so the rest of the kernel sees no difference: the call returns to the
//! instruction after the SYSCALL, and a call restarted after a signal
//! handler (RIP - 2) executes the original SYSCALL, which is still there.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use crate::state::KERNEL;
use kiln_kernel::exec::elf::PAGE_SIZE;
use kiln_kernel::mm::vma::{prot, Backing, Label, Vma};
use kiln_kernel::syscall::site;

use crate::arch;
use crate::process::Process;

/// Traps after which a site is rewritten.
pub const HOT: u8 = 3;
/// Bytes per trampoline (32 plus the moved instructions; when instructions
/// after the SYSCALL move, at most 4 before, the SYSCALL, up to 12 after
/// (a jump re-aimed grows to rel32) and a 5-byte jump back: at most 55;
/// padded with INT3).
const SLOT: u64 = 64;
/// How far a `jmp rel32` reaches, with a page of margin.
const REACH: u64 = (1 << 31) - 2 * PAGE_SIZE;

/// SYSCALL sites seen, trampolines made and sites rewritten; the
/// running process's instance is `state::KERNEL.rewriter` (the others'
/// wait in their `Process`).
#[derive(Clone, Default)]
pub struct Rewriter {
    /// Traps seen per SYSCALL address (`u8::MAX`: looked at already).
    seen: BTreeMap<u64, u8>,
    /// Trampoline pages: (address, bytes used).
    pages: Vec<(u64, u64)>,
    /// Sites rewritten so far.
    rewritten: u64,
    /// The program bytes each rewrite replaced, to move a saved RIP among
    /// them to the trampoline (see [`Moved::relocate`]).
    moved: Vec<Moved>,
}

/// The program bytes a rewrite replaced with a jump (and INT3s) and where
/// their instructions now run. A thread whose saved RIP lies among them —
/// another thread preempted there, one blocked in the SYSCALL when it
/// moved too, a signal frame saved there — must continue in the
/// trampoline instead, where the same instructions follow in the same
/// order.
#[derive(Clone, Copy, Debug)]
pub struct Moved {
    /// First replaced byte (the jump).
    start: u64,
    /// The SYSCALL.
    site: u64,
    /// End of the replaced bytes: `site` when the SYSCALL stayed,
    /// `site + 2 + after` when it and the instructions after it moved.
    end: u64,
    /// The trampoline: the moved instructions from `start` run first.
    tramp: u64,
    /// Where the call returns in the trampoline when the SYSCALL moved:
    /// the instructions that followed it (its copy is just before).
    returns_to: u64,
}

impl Moved {
    /// Where code saved at `rip` continues now, if `rip` is among the
    /// replaced bytes.
    pub fn relocate(&self, rip: u64) -> Option<u64> {
        if rip < self.start || rip >= self.end {
            None
        } else if rip < self.site {
            Some(self.tramp + (rip - self.start))
        } else if rip < self.site + 2 {
            // The SYSCALL itself (a call about to be restarted): its copy.
            Some(self.returns_to - 2)
        } else {
            Some(self.returns_to + (rip - self.site - 2))
        }
    }
}

impl Rewriter {
    /// Nothing seen yet.
    pub const fn new() -> Self {
        Self {
            seen: BTreeMap::new(),
            pages: Vec::new(),
            rewritten: 0,
            moved: Vec::new(),
        }
    }
}

/// How many sites were rewritten.
pub fn rewritten() -> u64 {
    KERNEL.rewriter.lock().rewritten
}

/// Counts a trap of the SYSCALL at `site`; true (once) at the [`HOT`]th,
/// when the site is due for [`rewrite_site`].
pub fn count_trap(site: u64) -> bool {
    if !crate::state::options().syscall_rewrite {
        return false;
    }
    let mut r = KERNEL.rewriter.lock();
    let count = r.seen.entry(site).or_insert(0);
    if *count == u8::MAX {
        return false;
    }
    *count += 1;
    if *count < HOT {
        return false;
    }
    *count = u8::MAX;
    true
}

/// A due site that could not be looked at now (a thread of the process
/// was running on another CPU) counts its traps again from zero.
pub fn retry_later(site: u64) {
    KERNEL.rewriter.lock().seen.insert(site, 0);
}

/// Rewrites the SYSCALL at `site` (with `number` in RAX) when that is
/// safe. Every other thread of the process must be stopped, and the
/// caller must then move those whose saved RIP is among the replaced
/// bytes (the trapping one too), with the returned [`Moved::relocate`].
pub fn rewrite_site(p: &mut Process, site: u64, number: u64) -> Option<Moved> {
    let mut r = KERNEL.rewriter.lock();
    let moved = rewrite(p, &mut r, site, number)?;
    r.rewritten += 1;
    r.moved.push(moved);
    Some(moved)
}

/// Where code saved at `rip` (by a signal frame) continues now, if a
/// rewrite replaced the bytes there.
pub fn relocate(rip: u64) -> Option<u64> {
    let r = KERNEL.rewriter.lock();
    r.moved.iter().find_map(|m| m.relocate(rip))
}

/// The image file holding the code at `addr` and the file offset of `addr`.
fn code_file(p: &Process, addr: u64) -> Option<(&'static [u8], u64)> {
    let vma = p.mem.vmas.find(addr)?;
    if vma.prot & prot::EXEC == 0 {
        return None;
    }
    let Backing::Image { phys, offset } = vma.backing else {
        return None;
    };
    let at = phys + offset + (addr - vma.start);
    let (bytes, start) = crate::fs::file_containing(at)?;
    Some((bytes, at - start))
}

/// Rewrites the SYSCALL at `site`, returning what moved where. Never in a
/// vfork child: its parent, sharing the memory, is of another process
/// whose threads the caller does not stop or move.
fn rewrite(p: &mut Process, r: &mut Rewriter, site: u64, number: u64) -> Option<Moved> {
    if p.vfork_parent.is_some() {
        return None;
    }
    let (file, site_off) = code_file(p, site)?;
    let link_site = site::vaddr_of(file, site_off)?;
    let found = site::check(file, link_site)?;
    if found.number.is_some_and(|n| u64::from(n) != number) {
        return None;
    }
    let (len, after) = (u64::from(found.len), u64::from(found.after));
    let start = site.checked_sub(len)?;
    // The moved instructions must come from the same file, just before.
    let (start_file, start_off) = code_file(p, start)?;
    if start_file.as_ptr() != file.as_ptr() || start_off + len != site_off {
        return None;
    }
    // The program's bytes must still be the file's (not already patched,
    // not generated code).
    let end = site_off + 2 + after;
    let original = file.get(start_off as usize..end as usize)?;
    if p.mem.user_bytes(start, end - start_off).ok()? != original {
        return None;
    }
    let before = &original[..len as usize];
    let moved_after = &original[len as usize + 2..];
    let (tramp, returns_to) = trampoline(p, r, start, (before, moved_after), site + 2 + after)?;
    let covered = jump_to_trampoline(p, start, tramp, &found)?;
    Some(Moved {
        start,
        site,
        end: start + covered,
        tramp,
        returns_to,
    })
}

/// A trampoline running the `before` instructions, then entering the
/// kernel as a SYSCALL would, returning to `back` — or, when `after` is not
/// empty, to a copy of those instructions followed by a jump to `back`;
/// within reach of `near`. Returns the trampoline and where calls return.
fn trampoline(
    p: &mut Process,
    r: &mut Rewriter,
    near: u64,
    (before, after): (&[u8], &[u8]),
    back: u64,
) -> Option<(u64, u64)> {
    trampoline_with(p, r, near, (before, after), back, Replaces::Syscall)
}

/// What a trampoline does between the instructions moved from before the
/// site and those moved from after it.
#[derive(Clone, Copy)]
enum Replaces {
    /// Enters the kernel as the SYSCALL would.
    Syscall,
    /// Calls the process's CPUID routine (at this address), which answers
    /// from the kernel's table as the CPUID instruction would.
    Cpuid(u64),
}

fn trampoline_with(
    p: &mut Process,
    r: &mut Rewriter,
    near: u64,
    (before, after): (&[u8], &[u8]),
    back: u64,
    replaces: Replaces,
) -> Option<(u64, u64)> {
    let fits = |&(page, used): &(u64, u64)| used + SLOT <= PAGE_SIZE && page.abs_diff(near) < REACH;
    let index = match r.pages.iter().position(fits) {
        Some(i) => i,
        None => {
            // The highest free page below the code (below the program, or
            // in the gap below a library), never above: that is where the
            // brk heap grows.
            let page = p
                .mem
                .vmas
                .find_free_below(PAGE_SIZE, near & !(PAGE_SIZE - 1))
                .ok()?;
            if page.abs_diff(near) >= REACH {
                return None;
            }
            p.mem
                .add_area(Vma {
                    start: page,
                    end: page + PAGE_SIZE,
                    prot: prot::READ | prot::EXEC,
                    backing: Backing::Anonymous,
                    label: Label::Trampoline,
                })
                .ok()?;
            r.pages.push((page, 0));
            r.pages.len() - 1
        }
    };
    let (page, used) = r.pages[index];
    let at = page + used;
    let mut code = [0xccu8; SLOT as usize];
    let mut n = 0;
    let mut put = |bytes: &[u8]| {
        code[n..n + bytes.len()].copy_from_slice(bytes);
        n += bytes.len();
    };
    put(before);
    put(&[0x48, 0x8d, 0x64, 0x24, 0x80]); // lea rsp, [rsp - 128]
                                          // Then what replaces the instruction; where the moved instructions
                                          // that followed it go; where the program's call returns.
    let (moved_at, returns_to) = match replaces {
        Replaces::Syscall => {
            // The call returns after the SYSCALL in the program, or, when
            // instructions after it moved, to them here (behind a SYSCALL
            // that a restarted call runs: it rewinds the return address by
            // two bytes).
            let entry_code = 5 + 3 + 10 + 6 + 8;
            let moved_at = at + (before.len() + entry_code + 2) as u64;
            let returns_to = if after.is_empty() { back } else { moved_at };
            put(&[0x9c, 0x41, 0x5b]); // pushfq; pop r11
            put(&[0x48, 0xb9]); // mov rcx, imm64
            put(&returns_to.to_le_bytes());
            put(&[0xff, 0x25, 0, 0, 0, 0]); // jmp [rip + 0]
            put(&arch::syscall_call_entry().to_le_bytes());
            if !after.is_empty() {
                put(&[0x0f, 0x05]); // syscall (a restart's)
            }
            (moved_at, returns_to)
        }
        Replaces::Cpuid(routine) => {
            // The routine, called clear of the red zone (LEA leaves the
            // flags alone); no call returns into the trampoline.
            put(&[0xff, 0x15, 2, 0, 0, 0]); // call [rip + 2]
            put(&[0xeb, 8]); // jmp over the address
            put(&routine.to_le_bytes());
            put(&[0x48, 0x8d, 0xa4, 0x24, 0x80, 0, 0, 0]); // lea rsp, [rsp + 128]
            (at + (before.len() + 5 + 6 + 2 + 8 + 8) as u64, back)
        }
    };
    // The instructions that followed, a jump among them re-aimed, and a
    // jump back (a SYSCALL with none moved returns to the program itself).
    if !after.is_empty() || matches!(replaces, Replaces::Cpuid(_)) {
        let mut moved = [0u8; site::MAX_AFTER + 4];
        let from = back - after.len() as u64;
        let (len, ends_in_jump) = if after.is_empty() {
            (0, false)
        } else {
            site::relocate(after, from, moved_at, &mut moved)?
        };
        put(&moved[..len]);
        if !ends_in_jump {
            let jump_end = moved_at + (len + 5) as u64;
            let rel = back.wrapping_sub(jump_end) as i64;
            put(&[0xe9]); // jmp back
            put(&i32::try_from(rel).ok()?.to_le_bytes());
        }
    }
    // Through poke_code: after a fork the page is shared copy-on-write,
    // and this process's trampolines must not appear in the other's.
    p.mem.poke_code(at, &code).ok()?;
    r.pages[index].1 = used + SLOT;
    Some((at, returns_to))
}

/// CPUID sites found in a file (by the guest-physical address of its
/// first byte), checked once per VM: (link-time address of the CPUID, what
/// moves).
static CPUID_SITES: spin::Mutex<BTreeMap<u64, Vec<(u64, site::Site)>>> =
    spin::Mutex::new(BTreeMap::new());

/// The CPUID routine each process with rewritten CPUID sites gets, with
/// the kernel's table after it (position-free: the table is found
/// RIP-relative). EAX = leaf and ECX = subleaf in; EAX, EBX, ECX and EDX
/// out as the CPUID instruction sets them (upper halves cleared); every
/// other register and the flags kept. A leaf the table lacks (those whose
/// values depend on the running CPU or its state) runs the instruction.
const CPUID_ROUTINE: [u8; 63] = [
    0x9c, // pushfq
    0x56, // push rsi
    0x57, // push rdi
    0x48, 0x8d, 0x35, 150, 0, 0, 0, // lea rsi, [rip + 150]  (entries, at 160)
    0x8b, 0x3d, 112, 0, 0, 0, // mov edi, [rip + 112]  (count, at 128)
    // 16: loop
    0x85, 0xff, // test edi, edi
    0x74, 23, // jz 43 (not found)
    0x39, 0x06, // cmp [rsi], eax
    0x75, 11, // jne 35 (next)
    0xf6, 0x46, 0x08, 0x01, // test byte [rsi + 8], 1  (subleaf matters)
    0x74, 17, // jz 47 (found)
    0x39, 0x4e, 0x04, // cmp [rsi + 4], ecx
    0x74, 12, // je 47 (found)
    // 35: next
    0x48, 0x83, 0xc6, 0x20, // add rsi, 32
    0xff, 0xcf, // dec edi
    0xeb, 0xe5, // jmp 16
    // 43: not found
    0x0f, 0xa2, // cpuid
    0xeb, 12, // jmp 59
    // 47: found
    0x8b, 0x46, 0x0c, // mov eax, [rsi + 12]
    0x8b, 0x5e, 0x10, // mov ebx, [rsi + 16]
    0x8b, 0x4e, 0x14, // mov ecx, [rsi + 20]
    0x8b, 0x56, 0x18, // mov edx, [rsi + 24]
    // 59: done
    0x5f, // pop rdi
    0x5e, // pop rsi
    0x9d, // popfq
    0xc3, // ret
];
/// Where the routine page holds the entry count and the first entry.
const CPUID_COUNT_AT: usize = 128;
const CPUID_ENTRIES_AT: usize = 160;

/// Rewrites the CPUID instructions of the ELF file `file` (at
/// guest-physical `phys`), loaded at `bias` into the new process `p`, into
/// calls of a routine that answers from the kernel's CPUID table: on PVM
/// the host emulates every CPUID (~20 µs), glibc's dynamic loader asks
/// about 27 of them as each program starts, a static glibc program as
/// many. Only at exec, before the program runs (no thread can be inside
/// the replaced bytes). The sites are those the image builder listed for
/// the file (its `user.kiln.cpuid` record); without a list, those
/// [`site::check_instruction`] finds movable in the whole of its code when
/// `scan` is set (the loader's: reading all of a large static program's
/// code costs as many exits as its CPUIDs), none otherwise. Returns how
/// many sites were rewritten.
pub fn rewrite_cpuid_sites(
    p: &mut Process,
    file: &[u8],
    phys: u64,
    bias: u64,
    scan: bool,
) -> usize {
    let table = arch::program_cpuid_table();
    if !crate::state::options().syscall_rewrite || table.is_empty() || p.vfork_parent.is_some() {
        return 0;
    }
    let sites: Vec<(u64, site::Site)> = match crate::fs::cpuid_sites(phys) {
        // The list is the image's word for the file's code; a site whose
        // bytes are not a CPUID is left alone.
        Some(listed) => listed
            .iter()
            .filter(|&&(at, _)| site::has_instruction_at(file, at, site::CPUID))
            .copied()
            .collect(),
        None if scan => CPUID_SITES
            .lock()
            .entry(phys)
            .or_insert_with(|| site::cpuid_sites(file))
            .clone(),
        None => return 0,
    };
    if sites.is_empty() {
        return 0;
    }
    let Some(routine) = cpuid_routine(p, table) else {
        return 0;
    };
    let mut r = Rewriter::new();
    let mut done = 0;
    // One TLB flush for all the pages made private, and sites in address
    // order: one whose bytes overlap an earlier one's is left alone.
    arch::tlb_batch(|| {
        let mut patched_to = 0;
        for (link_site, found) in sites {
            if found.start_vaddr < patched_to {
                continue;
            }
            if rewrite_cpuid(p, &mut r, file, (link_site, found), bias, routine).is_some() {
                patched_to = link_site + 2 + u64::from(found.after);
                done += 1;
            }
        }
    });
    done
}

/// Maps the CPUID routine and `table` into `p`; returns the routine's
/// address.
fn cpuid_routine(p: &mut Process, table: &[kiln_boot::CpuidEntry]) -> Option<u64> {
    let len = (CPUID_ENTRIES_AT + 32 * table.len()).next_multiple_of(PAGE_SIZE as usize) as u64;
    let start = p
        .mem
        .vmas
        .find_free_below(len, crate::mm::space::MMAP_TOP)
        .ok()?;
    p.mem
        .add_area(Vma {
            start,
            end: start + len,
            prot: prot::READ | prot::EXEC,
            backing: Backing::Anonymous,
            label: Label::Trampoline,
        })
        .ok()?;
    let mut page = alloc::vec![0xccu8; CPUID_ENTRIES_AT];
    page[..CPUID_ROUTINE.len()].copy_from_slice(&CPUID_ROUTINE);
    page[CPUID_COUNT_AT..CPUID_COUNT_AT + 4].copy_from_slice(&(table.len() as u32).to_le_bytes());
    for e in table {
        for word in [e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx, 0] {
            page.extend_from_slice(&word.to_le_bytes());
        }
    }
    p.mem.copy_into(start, &page).ok()?;
    Some(start)
}

/// Rewrites one CPUID site (link-time `link_site`, loaded at `bias`).
fn rewrite_cpuid(
    p: &mut Process,
    r: &mut Rewriter,
    file: &[u8],
    (link_site, found): (u64, site::Site),
    bias: u64,
    routine: u64,
) -> Option<()> {
    let (len, after) = (u64::from(found.len), u64::from(found.after));
    let site = bias.checked_add(link_site)?;
    let start = site.checked_sub(len)?;
    let start_off = site::file_offset_of(file, found.start_vaddr)?;
    let end = start_off + (len + 2 + after) as usize;
    // The process's bytes are the file's: mapped from it just now, and no
    // earlier site's rewrite reached them.
    let original = file.get(start_off..end)?;
    let before = &original[..len as usize];
    let moved_after = &original[len as usize + 2..];
    let (tramp, _) = trampoline_with(
        p,
        r,
        start,
        (before, moved_after),
        site + 2 + after,
        Replaces::Cpuid(routine),
    )?;
    jump_to_trampoline(p, start, tramp, &found).map(drop)
}

/// Writes the jump from the site `found` (its moved bytes starting at
/// `start`) to `tramp`, then INT3 over the bytes nothing runs any more
/// (the check found no jump into them); returns how many bytes it
/// replaced.
fn jump_to_trampoline(p: &mut Process, start: u64, tramp: u64, found: &site::Site) -> Option<u64> {
    let (len, after) = (u64::from(found.len), u64::from(found.after));
    let rel = i32::try_from(tramp.wrapping_sub(start + 5) as i64).ok()?;
    let covered = if after > 0 { len + 2 + after } else { len };
    let mut jump = [0xccu8; site::MAX_MOVED + 2 + site::MAX_AFTER];
    jump[0] = 0xe9;
    jump[1..5].copy_from_slice(&rel.to_le_bytes());
    p.mem.poke_code(start, &jump[..covered as usize]).ok()?;
    Some(covered)
}
