//! Image references: `[REGISTRY/]REPOSITORY[:TAG][@sha256:DIGEST]`, as
//! Docker and the OCI distribution spec write them. A reference whose first
//! component has a dot or a port, or is `localhost`, names a registry;
//! without one the name is local to this machine's store.

use std::fmt;

use super::digest_hex;

/// Why a reference is refused.
#[derive(Debug, thiserror::Error)]
#[error("invalid image reference {reference:?}: {reason}")]
pub struct ReferenceError {
    /// The text.
    pub reference: String,
    /// What is wrong.
    pub reason: String,
}

/// A parsed image reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]`, if the reference names a registry.
    pub registry: Option<String>,
    /// The repository path (`team/app`).
    pub repository: String,
    /// The tag (`latest` when neither tag nor digest is given).
    pub tag: Option<String>,
    /// `sha256:<hex>`, when pinned.
    pub digest: Option<String>,
}

impl Reference {
    /// Parses `text`.
    ///
    /// # Errors
    /// [`ReferenceError`] saying which part is malformed.
    pub fn parse(text: &str) -> Result<Self, ReferenceError> {
        let err = |reason: &str| ReferenceError {
            reference: text.into(),
            reason: reason.into(),
        };
        let (name, digest) = match text.split_once('@') {
            Some((n, d)) => {
                digest_hex(d).map_err(|_| {
                    err("the part after @ must be sha256: and 64 lower-case hex digits")
                })?;
                (n, Some(d.to_owned()))
            }
            None => (text, None),
        };
        let (registry, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                if !first
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
                {
                    return Err(err(
                        "the registry host has characters a host name cannot have",
                    ));
                }
                (Some(first.to_owned()), rest)
            }
            _ => (None, name),
        };
        let (repository, tag) = match path.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r, Some(t.to_owned())),
            _ => (path, None),
        };
        if repository.is_empty() {
            return Err(err("the repository name is empty"));
        }
        for component in repository.split('/') {
            if !valid_component(component) {
                return Err(err(&format!(
                    "repository component {component:?} must be lower-case letters and digits, \
                     separated by '.', '_', '__' or '-'"
                )));
            }
        }
        if let Some(t) = &tag {
            if !valid_tag(t) {
                return Err(err(&format!(
                    "tag {t:?} must be 1-128 letters, digits, '_', '.' or '-', not starting with '.' or '-'"
                )));
            }
        }
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_owned())
        } else {
            tag
        };
        Ok(Self {
            registry,
            repository: repository.into(),
            tag,
            digest,
        })
    }

    /// `registry/repository` (or just the repository for local names).
    pub fn name(&self) -> String {
        match &self.registry {
            Some(r) => format!("{r}/{}", self.repository),
            None => self.repository.clone(),
        }
    }

    /// What to ask a registry for: the digest if pinned, else the tag.
    pub fn manifest_key(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// The names an image pushed to or pulled from here gets in the local
    /// store: the reference with its tag (none when pinned by digest only).
    pub fn store_names(&self) -> Vec<Reference> {
        self.tag.iter().map(|t| self.with_tag(t)).collect()
    }

    /// The same name with `tag` and no digest.
    pub fn with_tag(&self, tag: &str) -> Self {
        Self {
            tag: Some(tag.into()),
            digest: None,
            ..self.clone()
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

fn valid_component(c: &str) -> bool {
    let bytes = c.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    // Separators: one '.', one or two '_', or any number of '-'.
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || b"_.-".contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_forms() {
        let r = Reference::parse("localhost:5000/team/hello:1.0").unwrap();
        assert_eq!(r.registry.as_deref(), Some("localhost:5000"));
        assert_eq!(r.repository, "team/hello");
        assert_eq!(r.tag.as_deref(), Some("1.0"));
        assert_eq!(r.to_string(), "localhost:5000/team/hello:1.0");

        let r = Reference::parse("hello").unwrap();
        assert_eq!((r.registry, r.tag.as_deref()), (None, Some("latest")));

        let d = format!("sha256:{}", "ab".repeat(32));
        let r = Reference::parse(&format!("registry.example.com/app@{d}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.manifest_key(), d);
        assert_eq!(r.name(), "registry.example.com/app");

        let r = Reference::parse("localhost/a_b__c-d.e:v1_2").unwrap();
        assert_eq!(r.repository, "a_b__c-d.e");
    }

    #[test]
    fn refuses_malformed_references() {
        for bad in [
            "",
            "Hello",
            "localhost:5000/",
            "hello:",
            "hello:-x",
            "a..b",
            "a___b",
            "-a",
            "hello@sha256:1234",
            "bad host!/x",
            &format!("x:{}", "t".repeat(129)),
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
