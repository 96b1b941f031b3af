//! Sparse files in layer tars, extracted with their holes left as holes.
//!
//! Two families exist (GNU tar's manual, "Storing Sparse Files"):
//!
//! - the old GNU format, entry type `S`: the map is in the header and its
//!   extension blocks. The tar crate reads it and hands out the expanded
//!   bytes, holes as zeros, without the map; [`write_skipping_zeros`] turns
//!   all-zero blocks back into holes.
//! - the PAX formats 0.0, 0.1 and 1.0 (`tar --sparse --format=posix`; 1.0
//!   is the default), entry type `0` with `GNU.sparse.*` records. The tar
//!   crate does not know them and hands out the stored data: in 1.0 the map
//!   as decimal text padded to a block, then the data segments; in 0.x the
//!   segments alone, the map being in the records. [`PaxSparse`] reads the
//!   map and [`write_segments`] writes each segment at its offset.
//!
//! Either way the file gets its apparent length with ftruncate(2) at the
//! end, so a trailing hole takes no disk either.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

/// The most bytes a 1.0 sparse map may take, as Go's archive/tar allows
/// (`maxSpecialFileSize`): enough for 100,000 segments.
const MAX_MAP_BYTES: u64 = 1 << 20;

/// Block size of the zero scan: a hole shorter than a filesystem block
/// saves nothing.
const ZERO_BLOCK: usize = 4096;
static ZEROS: [u8; ZERO_BLOCK] = [0; ZERO_BLOCK];

/// One data segment: `(offset, length)` in the extracted file.
pub(crate) type Segment = (u64, u64);

/// Where a PAX sparse entry's map is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MapIn {
    /// 0.0 and 0.1: in the PAX records
    Records(Vec<Segment>),
    /// 1.0: at the start of the entry's data
    Data,
}

/// What the `GNU.sparse.*` PAX records of a regular-file entry say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PaxSparse {
    /// the file's real name (`GNU.sparse.name`); the header's own name is
    /// a placeholder (`GNUSparseFile.<pid>/<name>`) in 0.1 and 1.0
    pub name: Option<Vec<u8>>,
    /// the apparent size of the extracted file
    pub real_size: u64,
    pub map: MapIn,
}

impl PaxSparse {
    /// Reads the `GNU.sparse.*` records (in archive order; the 0.0 format
    /// repeats `offset`/`numbytes` pairs). `Ok(None)`: not a sparse entry.
    pub(crate) fn from_records(records: &[(Vec<u8>, Vec<u8>)]) -> Result<Option<Self>, String> {
        if records.is_empty() {
            return Ok(None);
        }
        let get = |k: &[u8]| {
            records
                .iter()
                .rev()
                .find(|(key, _)| key == k)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        let num = |what: &str, v: &str| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| format!("`GNU.sparse.{what}` is `{v}`, not a number"))
        };
        let name = records
            .iter()
            .rev()
            .find(|(k, _)| k == b"GNU.sparse.name")
            .map(|(_, v)| v.clone());
        let version = (get(b"GNU.sparse.major"), get(b"GNU.sparse.minor"));
        let one_zero = match (version.0.as_deref(), version.1.as_deref()) {
            (Some("1"), Some("0")) => true,
            (Some("0"), Some("0" | "1")) | (None, None) => false,
            (major, minor) => {
                return Err(format!(
                    "sparse format {}.{} is not supported (GNU tar writes 0.0, 0.1 and 1.0)",
                    major.unwrap_or("?"),
                    minor.unwrap_or("?")
                ));
            }
        };
        if one_zero {
            let size = get(b"GNU.sparse.realsize")
                .ok_or("a 1.0 sparse entry without `GNU.sparse.realsize`")?;
            return Ok(Some(PaxSparse {
                name,
                real_size: num("realsize", &size)?,
                map: MapIn::Data,
            }));
        }
        let mut map = Vec::new();
        if let Some(text) = get(b"GNU.sparse.map") {
            // 0.1: "offset,length,offset,length,..."
            let nums = text
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|s| num("map", s))
                .collect::<Result<Vec<_>, _>>()?;
            if nums.len() % 2 != 0 {
                return Err("`GNU.sparse.map` has an odd count of numbers".into());
            }
            map.extend(nums.chunks_exact(2).map(|c| (c[0], c[1])));
        } else {
            // 0.0: repeated `offset` then `numbytes`
            let mut pending: Option<u64> = None;
            for (k, v) in records {
                let v = String::from_utf8_lossy(v);
                match k.as_slice() {
                    b"GNU.sparse.offset" if pending.is_none() => {
                        pending = Some(num("offset", &v)?);
                    }
                    b"GNU.sparse.numbytes" if pending.is_some() => {
                        let off = pending.take().unwrap_or_default();
                        map.push((off, num("numbytes", &v)?));
                    }
                    b"GNU.sparse.offset" | b"GNU.sparse.numbytes" => {
                        return Err("`GNU.sparse.offset` and `numbytes` do not alternate".into());
                    }
                    _ => {}
                }
            }
            if pending.is_some() {
                return Err("`GNU.sparse.offset` without its `numbytes`".into());
            }
            if map.is_empty() && get(b"GNU.sparse.numblocks").is_none() {
                // only unrelated `GNU.sparse.*` records: not a sparse entry
                return Ok(None);
            }
        }
        if let Some(n) = get(b"GNU.sparse.numblocks")
            && num("numblocks", &n)? != map.len() as u64
        {
            return Err(format!(
                "`GNU.sparse.numblocks` is {n} but the map has {} segments",
                map.len()
            ));
        }
        let size = get(b"GNU.sparse.size").ok_or("a sparse entry without `GNU.sparse.size`")?;
        Ok(Some(PaxSparse {
            name,
            real_size: num("size", &size)?,
            map: MapIn::Records(map),
        }))
    }
}

/// Reads a 1.0 map from the start of the entry's data: the count of
/// segments, then offset and length of each, one decimal number per line,
/// padded with zeros to a 512-byte block. Returns the map and the bytes it
/// took (whole blocks); `stored` is the entry's stored size.
pub(crate) fn read_map(r: &mut impl Read, stored: u64) -> Result<(Vec<Segment>, u64), String> {
    let mut buf: Vec<u8> = Vec::new();
    let mut pos = 0usize;
    let mut next = |buf: &mut Vec<u8>| -> Result<u64, String> {
        loop {
            if let Some(nl) = buf[pos..].iter().position(|b| *b == b'\n') {
                let text = String::from_utf8_lossy(&buf[pos..pos + nl]).into_owned();
                pos += nl + 1;
                return text
                    .parse::<u64>()
                    .map_err(|_| format!("`{text}` in the map is not a number"));
            }
            let have = buf.len() as u64;
            if have + 512 > stored.min(MAX_MAP_BYTES) {
                return Err(if have + 512 > stored {
                    "the map runs past the entry's data".into()
                } else {
                    format!("the map is longer than {MAX_MAP_BYTES} bytes")
                });
            }
            let at = buf.len();
            buf.resize(at + 512, 0);
            r.read_exact(&mut buf[at..])
                .map_err(|e| format!("cannot read the map: {e}"))?;
        }
    };
    let count = next(&mut buf)?;
    // each segment takes at least four bytes of map ("0\n0\n")
    if count > MAX_MAP_BYTES / 4 {
        return Err(format!("the map claims {count} segments"));
    }
    let mut map = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let off = next(&mut buf)?;
        let len = next(&mut buf)?;
        map.push((off, len));
    }
    Ok((map, buf.len() as u64))
}

/// Checks that the segments are in order, do not overlap, end within
/// `real_size` and add up to `data` stored bytes.
pub(crate) fn check_map(map: &[Segment], real_size: u64, data: u64) -> Result<(), String> {
    let mut end = 0u64;
    let mut sum = 0u64;
    for &(off, len) in map {
        if off < end {
            return Err(format!("segment at {off} overlaps the one before"));
        }
        end = off
            .checked_add(len)
            .filter(|e| *e <= real_size)
            .ok_or_else(|| format!("segment at {off} ends past the file's size {real_size}"))?;
        sum = sum.saturating_add(len);
    }
    if sum != data {
        return Err(format!(
            "the map's segments hold {sum} bytes but the entry stores {data}"
        ));
    }
    Ok(())
}

/// Writes the segments of `map`, read one after the other from `r`, at
/// their offsets in `f` (pwrite(2)), then makes `f` `size` bytes long:
/// what lies between is a hole. Returns the bytes written.
pub(crate) fn write_segments(
    r: &mut impl Read,
    f: &File,
    map: &[Segment],
    size: u64,
) -> io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut written = 0;
    for &(off, len) in map {
        let mut done = 0u64;
        while done < len {
            let want = (len - done).min(buf.len() as u64) as usize;
            r.read_exact(&mut buf[..want])?;
            f.write_all_at(&buf[..want], off + done)?;
            done += want as u64;
        }
        written += len;
    }
    f.set_len(size)?;
    Ok(written)
}

/// Copies all of `r` into `f`, leaving each all-zero 4 KiB block as a hole
/// (as `cp --sparse=always` does), then sets the length to what was read.
/// For the old GNU format, whose holes the tar crate hands out as zeros.
/// Returns the bytes written.
pub(crate) fn write_skipping_zeros(r: &mut impl Read, f: &File) -> io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    let mut written = 0u64;
    loop {
        // whole buffers keep the blocks aligned to the file's offsets
        let mut n = 0;
        while n < buf.len() {
            match r.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if n == 0 {
            break;
        }
        let is_zero = |i: usize| {
            let end = (i + ZERO_BLOCK).min(n);
            buf[i..end] == ZEROS[..end - i]
        };
        let mut i = 0;
        while i < n {
            if is_zero(i) {
                i += ZERO_BLOCK;
                continue;
            }
            let start = i;
            while i < n && !is_zero(i) {
                i += ZERO_BLOCK;
            }
            let end = i.min(n);
            f.write_all_at(&buf[start..end], at + start as u64)?;
            written += (end - start) as u64;
        }
        at += n as u64;
        if n < buf.len() {
            break;
        }
    }
    f.set_len(at)?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(pairs: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn pax_sparse_records_of_each_version() {
        // as GNU tar 1.34 writes them for a 50 GiB file with two 4 KiB
        // segments (`--sparse --format=posix --sparse-version=...`)
        let v00 = rec(&[
            ("GNU.sparse.size", "53687091200"),
            ("GNU.sparse.numblocks", "3"),
            ("GNU.sparse.offset", "1073741824"),
            ("GNU.sparse.numbytes", "4096"),
            ("GNU.sparse.offset", "53687087104"),
            ("GNU.sparse.numbytes", "4096"),
            ("GNU.sparse.offset", "53687091200"),
            ("GNU.sparse.numbytes", "0"),
        ]);
        let map = vec![(1073741824, 4096), (53687087104, 4096), (53687091200, 0)];
        let s = PaxSparse::from_records(&v00).unwrap().unwrap();
        assert_eq!(s.real_size, 53687091200);
        assert_eq!(s.map, MapIn::Records(map.clone()));
        assert_eq!(s.name, None);

        let v01 = rec(&[
            ("GNU.sparse.size", "53687091200"),
            ("GNU.sparse.numblocks", "3"),
            ("GNU.sparse.name", "big"),
            (
                "GNU.sparse.map",
                "1073741824,4096,53687087104,4096,53687091200,0",
            ),
        ]);
        let s = PaxSparse::from_records(&v01).unwrap().unwrap();
        assert_eq!(s.map, MapIn::Records(map));
        assert_eq!(s.name.as_deref(), Some(&b"big"[..]));

        let v10 = rec(&[
            ("GNU.sparse.major", "1"),
            ("GNU.sparse.minor", "0"),
            ("GNU.sparse.name", "big"),
            ("GNU.sparse.realsize", "53687091200"),
        ]);
        let s = PaxSparse::from_records(&v10).unwrap().unwrap();
        assert_eq!((s.real_size, s.map), (53687091200, MapIn::Data));

        assert_eq!(PaxSparse::from_records(&[]).unwrap(), None);
        for bad in [
            rec(&[("GNU.sparse.major", "2"), ("GNU.sparse.minor", "0")]),
            rec(&[("GNU.sparse.major", "1"), ("GNU.sparse.minor", "0")]),
            rec(&[("GNU.sparse.size", "10"), ("GNU.sparse.map", "0,1,2")]),
            rec(&[("GNU.sparse.size", "x"), ("GNU.sparse.map", "0,1")]),
            rec(&[("GNU.sparse.size", "9"), ("GNU.sparse.offset", "0")]),
            rec(&[
                ("GNU.sparse.size", "9"),
                ("GNU.sparse.numblocks", "2"),
                ("GNU.sparse.map", "0,1"),
            ]),
        ] {
            assert!(PaxSparse::from_records(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn maps_in_data_are_read_and_checked() {
        let mut data = b"2\n0\n5\n4096\n3\n".to_vec();
        data.resize(512, 0);
        data.extend_from_slice(b"helloabc");
        let (map, used) = read_map(&mut &data[..], data.len() as u64).unwrap();
        assert_eq!((map.clone(), used), (vec![(0, 5), (4096, 3)], 512));
        check_map(&map, 8192, 8).unwrap();
        assert!(check_map(&map, 4098, 8).unwrap_err().contains("ends past"));
        assert!(
            check_map(&map, 8192, 9)
                .unwrap_err()
                .contains("hold 8 bytes")
        );
        assert!(
            check_map(&[(10, 5), (12, 1)], 100, 6)
                .unwrap_err()
                .contains("overlaps")
        );
        assert!(check_map(&[(u64::MAX, 2)], u64::MAX, 2).is_err());

        // a map that never ends, or claims more segments than it could hold
        let endless = vec![b'7'; 4096];
        assert!(
            read_map(&mut &endless[..], 4096)
                .unwrap_err()
                .contains("past")
        );
        let mut huge = b"99999999999\n".to_vec();
        huge.resize(512, 0);
        assert!(
            read_map(&mut &huge[..], 512)
                .unwrap_err()
                .contains("claims")
        );
    }
}
