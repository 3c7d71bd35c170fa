//! An image's three sections wherever they live: inside a verified `.kiln`
//! file, or as separate blobs in the local store. Booting, exporting and
//! publishing work on [`ImageParts`], so none of them cares which.

use std::os::unix::fs::FileExt;

use kiln_vmm::source::FileSlice;

use crate::image::{encode_header, hex, Image, SectionKind, HEADER_SIZE, SECTION_ALIGN};

/// One section: its digest and where its bytes are.
#[derive(Clone, Debug)]
pub struct Part {
    /// What it holds.
    pub kind: SectionKind,
    /// sha256 of its bytes, lower-case hex.
    pub sha256: String,
    /// Its bytes.
    pub slice: FileSlice,
}

impl Part {
    /// Its size in bytes.
    pub fn size(&self) -> u64 {
        self.slice.len
    }

    /// Reads all of its bytes.
    ///
    /// # Errors
    /// When the file cannot be read.
    pub fn read(&self) -> std::io::Result<Vec<u8>> {
        let len = usize::try_from(self.slice.len).map_err(std::io::Error::other)?;
        let mut buf = vec![0u8; len];
        self.slice.file.read_exact_at(&mut buf, self.slice.offset)?;
        Ok(buf)
    }

    fn digest_bytes(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = self
                .sha256
                .get(2 * i..2 * i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .unwrap_or(0);
        }
        out
    }
}

/// The configuration, kernel and rootfs of one image.
#[derive(Clone, Debug)]
pub struct ImageParts {
    /// What to call the image in messages (a path or a reference).
    pub label: String,
    /// The boot configuration (JSON).
    pub config: Part,
    /// The guest kernel (ELF).
    pub kernel: Part,
    /// The root file system (tar).
    pub rootfs: Part,
}

impl ImageParts {
    /// The sections of a verified image file.
    pub fn from_image(image: &Image) -> Self {
        let part = |kind: SectionKind| {
            let s = image.section(kind);
            Part {
                kind,
                sha256: s.sha256.clone(),
                slice: FileSlice {
                    file: image.file.clone(),
                    offset: s.offset,
                    len: s.size,
                    name: format!("{}:{}", image.path.display(), kind.name()),
                },
            }
        };
        Self {
            label: image.path.display().to_string(),
            config: part(SectionKind::Config),
            kernel: part(SectionKind::Kernel),
            rootfs: part(SectionKind::Rootfs),
        }
    }

    /// The three parts in image order.
    pub fn all(&self) -> [&Part; 3] {
        [&self.config, &self.kernel, &self.rootfs]
    }

    /// The part of `kind`.
    pub fn get(&self, kind: SectionKind) -> &Part {
        match kind {
            SectionKind::Config => &self.config,
            SectionKind::Kernel => &self.kernel,
            SectionKind::Rootfs => &self.rootfs,
        }
    }

    /// The digest `kiln inspect` shows for the `.kiln` file these parts
    /// make: the sha256 of its header.
    pub fn image_digest(&self) -> String {
        let entries: Vec<_> = self
            .all()
            .iter()
            .map(|p| (p.kind, p.size(), p.digest_bytes()))
            .collect();
        hex(&<sha2::Sha256 as sha2::Digest>::digest(encode_header(
            &entries,
        )))
    }

    /// Each part's offset in the `.kiln` file these parts make, and that
    /// file's size (the same numbers as the file's header has).
    pub fn file_layout(&self) -> ([u64; 3], u64) {
        let mut offsets = [0u64; 3];
        let mut at = HEADER_SIZE;
        for (i, p) in self.all().iter().enumerate() {
            offsets[i] = at;
            at = (at + p.size()).div_ceil(SECTION_ALIGN) * SECTION_ALIGN;
        }
        (offsets, at)
    }

    /// Total bytes of the three parts.
    pub fn size(&self) -> u64 {
        self.all().iter().map(|p| p.size()).sum()
    }
}
