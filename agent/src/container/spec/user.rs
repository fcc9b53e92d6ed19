//! Who the container runs as: `user[:group]` resolved against the image's own
//! `/etc/passwd` and `/etc/group` (read, never followed out of the rootfs).
use std::path::Path;

use crate::container::ContainerError;

/// A numeric identity inside the container.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// Resolves `user[:group]` (names or numbers) against the image's `/etc/passwd` and
/// `/etc/group`, as Docker does: a named user brings its primary group and the groups
/// that list it. `None` is root.
pub fn resolve_user(rootfs: &Path, user: Option<&str>) -> Result<ResolvedUser, ContainerError> {
    let Some(spec) = user else { return Ok(ResolvedUser::default()) };
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    // The image's files are untrusted data: read, never followed outside the rootfs
    // (a symlinked /etc/passwd simply fails to resolve names).
    let passwd = read_image_file(rootfs, "etc/passwd");
    let group = read_image_file(rootfs, "etc/group");
    let bad = |reason: String| ContainerError::User { user: spec.to_string(), reason };

    let (uid, primary_gid, name) = match user_part.parse::<u32>() {
        Ok(uid) => {
            let entry = passwd_entries(&passwd).find(|e| e.1 == uid);
            (uid, entry.as_ref().map(|e| e.2), entry.map(|e| e.0))
        }
        Err(_) => {
            let entry = passwd_entries(&passwd)
                .find(|e| e.0 == user_part)
                .ok_or_else(|| bad(format!("no user {user_part} in the image's /etc/passwd")))?;
            (entry.1, Some(entry.2), Some(entry.0))
        }
    };
    let gid = match group_part {
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group_entries(&group)
                .find(|e| e.0 == g)
                .map(|e| e.1)
                .ok_or_else(|| bad(format!("no group {g} in the image's /etc/group")))?,
        },
        None => primary_gid.unwrap_or(0),
    };
    // Supplementary groups only come with a named user and no explicit group.
    let mut additional_gids = Vec::new();
    if let (Some(name), None) = (&name, group_part) {
        for (_, gid_entry, members) in group_entries(&group) {
            if gid_entry != gid && members.iter().any(|m| m == name) {
                additional_gids.push(gid_entry);
            }
        }
    }
    Ok(ResolvedUser { uid, gid, additional_gids })
}

fn read_image_file(rootfs: &Path, relative: &str) -> String {
    let path = rootfs.join(relative);
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.is_file() => std::fs::read_to_string(&path).unwrap_or_default(),
        _ => String::new(),
    }
}

/// (name, uid, gid) of each `/etc/passwd` line.
fn passwd_entries(text: &str) -> impl Iterator<Item = (String, u32, u32)> + '_ {
    text.lines().filter_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() < 4 {
            return None;
        }
        Some((fields[0].to_string(), fields[2].parse().ok()?, fields[3].parse().ok()?))
    })
}

/// (name, gid, members) of each `/etc/group` line.
fn group_entries(text: &str) -> impl Iterator<Item = (String, u32, Vec<String>)> + '_ {
    text.lines().filter_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() < 3 {
            return None;
        }
        let members = fields.get(3).map(|m| m.split(',').filter(|s| !s.is_empty()).map(String::from).collect());
        Some((fields[0].to_string(), fields[2].parse().ok()?, members.unwrap_or_default()))
    })
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_resolve_from_the_image() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("etc")).expect("etc");
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nweb:x:1000:1000::/home/web:/bin/sh\n",
        )
        .expect("passwd");
        std::fs::write(dir.path().join("etc/group"), "root:x:0:\nweb:x:1000:\nstaff:x:50:web,other\n").expect("group");
        let root = dir.path();
        assert_eq!(resolve_user(root, None).expect("root"), ResolvedUser::default());
        assert_eq!(
            resolve_user(root, Some("web")).expect("web"),
            ResolvedUser { uid: 1000, gid: 1000, additional_gids: vec![50] }
        );
        assert_eq!(
            resolve_user(root, Some("web:staff")).expect("web:staff"),
            ResolvedUser { uid: 1000, gid: 50, additional_gids: vec![] }
        );
        assert_eq!(
            resolve_user(root, Some("4242:7")).expect("numeric"),
            ResolvedUser { uid: 4242, gid: 7, additional_gids: vec![] }
        );
        assert!(resolve_user(root, Some("nobody-here")).expect_err("unknown").to_string().contains("nobody-here"));
    }
}
