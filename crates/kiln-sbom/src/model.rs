//! The SBOM as kiln sees it, before any format: the image, the packages
//! found in it, its executables, and how they relate. [`crate::spdx`] and
//! [`crate::cyclonedx`] only render it, so both formats say the same.

use kiln_types::Digest;

/// Where a package was found, which also decides its purl type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Ecosystem {
    /// a part of kiln's built-in static base
    StaticBase,
    Deb,
    Golang,
    Cargo,
    Pypi,
    Npm,
    /// a build stage a file was copied from
    Stage,
    /// an image a stage started from
    Image,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub ecosystem: Ecosystem,
    pub name: String,
    pub version: Option<String>,
    pub purl: Option<String>,
    /// the file that records it (dpkg status, METADATA, a binary)
    pub location: Option<String>,
    /// as the record declares it (free text, not a checked SPDX expression)
    pub license: Option<String>,
    pub supplier: Option<String>,
    pub sha256: Option<String>,
    pub comment: Option<String>,
}

impl Package {
    pub fn new(ecosystem: Ecosystem, name: impl Into<String>, version: Option<String>) -> Self {
        Package {
            ecosystem,
            name: name.into(),
            version,
            purl: None,
            location: None,
            license: None,
            supplier: None,
            sha256: None,
            comment: None,
        }
    }
}

/// An executable file of the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub path: String,
    pub sha256: String,
    pub sha1: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Element {
    Image,
    Package(usize),
    File(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Relation {
    Contains,
    DependsOn,
    GeneratedFrom,
}

/// The image the SBOM describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// the name it is known by (`registry/repo:tag`, or its digest)
    pub name: String,
    pub digest: Option<Digest>,
    /// `linux/amd64`
    pub platform: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sbom {
    pub subject: Subject,
    /// SOURCE_DATE_EPOCH of the build (seconds)
    pub created: i64,
    pub packages: Vec<Package>,
    pub files: Vec<File>,
    /// sorted and free of duplicates
    pub relations: Vec<(Element, Relation, Element)>,
}

/// A copy into the final image out of a build stage: what kiln knows and a
/// scanner cannot. Files at or under `path` are GENERATED_FROM the stage,
/// which is GENERATED_FROM its base image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// the destination in the final image (a file or a directory)
    pub path: String,
    pub stage: String,
    /// the stage's base image: its reference and manifest digest
    pub base: Option<(String, Digest)>,
}
