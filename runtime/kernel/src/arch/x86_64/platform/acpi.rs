//! Just enough ACPI to power the machine off (ACPI 6.5, §5.2 and §16.1.4):
//! RSDP → RSDT/XSDT → FADT, whose PM1 control blocks take the S5 sleep
//! type found in the DSDT's `\_S5` package, with SLP_EN set. Every table
//! is checked for its signature, length and checksum before it is used.

use crate::arch::x86_64::cpu::outw;

use super::pc::boot_bytes;

/// Why the machine could not be powered off.
#[derive(Debug)]
pub enum PowerOffError {
    /// A table is missing, lies beyond the boot map or fails its checksum.
    Table(&'static str),
    /// The DSDT has no `\_S5` package kiln can read.
    NoS5,
}

impl core::fmt::Display for PowerOffError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Table(which) => write!(f, "the {which} is missing or damaged"),
            Self::NoS5 => f.write_str("the DSDT has no readable \\_S5 object"),
        }
    }
}

const SLP_EN: u16 = 1 << 13;

/// Powers off through the FADT's PM1 control blocks; returns only when
/// the tables cannot be read (or the write did nothing).
pub fn power_off(rsdp_phys: u64) -> Result<(), PowerOffError> {
    let fadt = find_fadt(rsdp_phys)?;
    let pm1a = u32_at(fadt, 64).ok_or(PowerOffError::Table("FADT"))?;
    let pm1b = u32_at(fadt, 68).unwrap_or(0);
    let dsdt_phys = match u64_at(fadt, 140) {
        Some(x) if x != 0 && fadt.len() >= 148 => x,
        _ => u64::from(u32_at(fadt, 40).ok_or(PowerOffError::Table("FADT"))?),
    };
    let dsdt = table(dsdt_phys, b"DSDT").ok_or(PowerOffError::Table("DSDT"))?;
    let (typ_a, typ_b) = s5_sleep_types(dsdt).ok_or(PowerOffError::NoS5)?;
    if pm1a == 0 || pm1a > 0xffff {
        return Err(PowerOffError::Table("FADT's PM1a control block"));
    }
    outw(pm1a as u16, (u16::from(typ_a) << 10) | SLP_EN);
    if pm1b != 0 && pm1b <= 0xffff {
        outw(pm1b as u16, (u16::from(typ_b) << 10) | SLP_EN);
    }
    Ok(())
}

/// The FADT ("FACP"), through the XSDT when the RSDP has one, else the RSDT.
fn find_fadt(rsdp_phys: u64) -> Result<&'static [u8], PowerOffError> {
    let rsdp = boot_bytes(rsdp_phys, 20);
    if rsdp.len() < 20 || &rsdp[..8] != b"RSD PTR " || checksum(rsdp) != 0 {
        return Err(PowerOffError::Table("RSDP"));
    }
    let revision = rsdp[15];
    if revision >= 2 {
        let v2 = boot_bytes(rsdp_phys, 36);
        if v2.len() == 36 && checksum(v2) == 0 {
            let xsdt_phys = u64_at(v2, 24).unwrap_or(0);
            if let Some(xsdt) = table(xsdt_phys, b"XSDT") {
                for entry in xsdt[36..].chunks_exact(8) {
                    let phys = u64::from_le_bytes(entry.try_into().unwrap());
                    if let Some(fadt) = table(phys, b"FACP") {
                        return Ok(fadt);
                    }
                }
            }
        }
    }
    let rsdt_phys = u64::from(u32_at(rsdp, 16).unwrap_or(0));
    let rsdt = table(rsdt_phys, b"RSDT").ok_or(PowerOffError::Table("RSDT"))?;
    for entry in rsdt[36..].chunks_exact(4) {
        let phys = u64::from(u32::from_le_bytes(entry.try_into().unwrap()));
        if let Some(fadt) = table(phys, b"FACP") {
            return Ok(fadt);
        }
    }
    Err(PowerOffError::Table("FADT"))
}

/// The whole system description table at `phys` when its signature is
/// `signature` and its checksum holds.
fn table(phys: u64, signature: &[u8; 4]) -> Option<&'static [u8]> {
    if phys == 0 {
        return None;
    }
    let header = boot_bytes(phys, 8);
    if header.len() != 8 || &header[..4] != signature {
        return None;
    }
    let len = u32::from_le_bytes(header[4..8].try_into().unwrap());
    if !(36..=16 << 20).contains(&len) {
        return None;
    }
    let bytes = boot_bytes(phys, u64::from(len));
    (bytes.len() == len as usize && checksum(bytes) == 0).then_some(bytes)
}

/// The sleep types of `\_S5`: the AML `NameOp "_S5_" PackageOp PkgLength
/// NumElements` followed by two integers (ZeroOp, OneOp or BytePrefix n).
fn s5_sleep_types(dsdt: &[u8]) -> Option<(u8, u8)> {
    let aml = &dsdt[36..];
    let at = aml.windows(4).position(|w| w == b"_S5_")?;
    let mut i = at + 4;
    if *aml.get(i)? != 0x12 {
        return None; // not a PackageOp
    }
    i += 1;
    // PkgLength: the top two bits of the lead byte count the bytes after it.
    i += 1 + usize::from(*aml.get(i)? >> 6);
    i += 1; // NumElements
    let mut integer = || -> Option<u8> {
        let op = *aml.get(i)?;
        i += 1;
        match op {
            0x00 => Some(0),
            0x01 => Some(1),
            0x0a => {
                let v = *aml.get(i)?;
                i += 1;
                Some(v)
            }
            _ => None,
        }
    };
    let a = integer()?;
    let b = integer().unwrap_or(a);
    Some((a & 7, b & 7))
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |sum, b| sum.wrapping_add(*b))
}

fn u32_at(bytes: &[u8], offset: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        bytes.get(offset..offset + 4)?.try_into().ok()?,
    ))
}

fn u64_at(bytes: &[u8], offset: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        bytes.get(offset..offset + 8)?.try_into().ok()?,
    ))
}
