//! Bytes as a decompressed image layer, unpacked by the agent's unpacker
//! (agent/src/image/unpack.rs) into `TMP/root` with small limits. Nothing may panic, and
//! whatever the layer says nothing may appear outside the root: `TMP` holds only `root`,
//! no file inside shares an inode with a file outside (hard links), and the only device
//! nodes are overlayfs whiteouts (0/0 character devices).
#![no_main]

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use plinth_agent::image::{unpack, UnpackLimits};

const LIMITS: UnpackLimits = UnpackLimits { max_bytes: 1 << 20, max_entries: 256 };

fuzz_target!(|data: &[u8]| {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let root = tmp.path().join("root");
    fs::create_dir(&root).expect("the layer root");
    let result = unpack(data, &root, "sha256:fuzz", LIMITS);

    let outside: Vec<_> =
        fs::read_dir(tmp.path()).expect("read the temp dir").map(|e| e.expect("entry").file_name()).collect();
    assert_eq!(outside, vec!["root"], "the layer wrote beside its root ({result:?})");
    let meta = fs::symlink_metadata(&root).expect("the root is still there");
    assert!(meta.file_type().is_dir(), "the root was replaced by a {:?}", meta.file_type());

    // inode -> (links seen inside the root, st_nlink)
    let mut links: HashMap<u64, (u64, u64)> = HashMap::new();
    walk(&root, &mut links);
    for (inode, (seen, nlink)) in links {
        assert_eq!(seen, nlink, "inode {inode} has links outside the layer root ({result:?})");
    }
    if let Ok(unpacked) = &result {
        assert!(unpacked.entries <= LIMITS.max_entries, "{unpacked:?} passed the entry limit");
        assert!(unpacked.bytes <= LIMITS.max_bytes, "{unpacked:?} passed the size limit");
    }
});

fn walk(dir: &Path, links: &mut HashMap<u64, (u64, u64)>) {
    for entry in fs::read_dir(dir).expect("read a directory of the layer") {
        let path = entry.expect("a directory entry").path();
        let meta = fs::symlink_metadata(&path).expect("lstat an entry");
        let kind = meta.file_type();
        if kind.is_dir() {
            walk(&path, links);
            continue;
        }
        if kind.is_block_device() || (kind.is_char_device() && meta.rdev() != 0) {
            panic!("{} is a device node {:#x}", path.display(), meta.rdev());
        }
        let seen = links.entry(meta.ino()).or_insert((0, meta.nlink()));
        seen.0 += 1;
    }
}
