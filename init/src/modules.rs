//! Kernel modules: which files to load, in which order (pure), from `modules.dep`,
//! `modules.builtin` and `modules.alias` as written by `depmod`.

use std::collections::{BTreeMap, BTreeSet};

/// `modules.dep` + `modules.builtin` + `modules.alias` of one kernel release.
#[derive(Debug, Default, Clone)]
pub struct ModuleIndex {
    /// module name → (relative path, dependency paths as listed)
    deps: BTreeMap<String, (String, Vec<String>)>,
    builtin: BTreeSet<String>,
    /// (pattern, module name), in file order
    aliases: Vec<(String, String)>,
    /// module name → names (or aliases) to load first, from `modules.softdep` `pre:`.
    softdeps: BTreeMap<String, Vec<String>>,
}

/// `kernel/drivers/net/virtio_net.ko` → `virtio_net`; dashes count as underscores, as in modprobe.
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

impl ModuleIndex {
    pub fn parse(modules_dep: &str, modules_builtin: &str, modules_alias: &str) -> Self {
        let mut index = ModuleIndex::default();
        for line in modules_dep.lines() {
            let Some((path, deps)) = line.split_once(':') else { continue };
            let path = path.trim();
            if path.is_empty() {
                continue;
            }
            let deps = deps.split_whitespace().map(str::to_string).collect();
            index.deps.insert(module_name(path), (path.to_string(), deps));
        }
        index.builtin = modules_builtin.lines().map(str::trim).filter(|l| !l.is_empty()).map(module_name).collect();
        for line in modules_alias.lines() {
            let mut words = line.split_whitespace();
            if let (Some("alias"), Some(pattern), Some(module)) = (words.next(), words.next(), words.next()) {
                index.aliases.push((pattern.to_string(), module.replace('-', "_")));
            }
        }
        index
    }

    /// Adds `modules.softdep`: `softdep libcrc32c pre: crc32c`. The kernel cannot load these
    /// itself (it would call /sbin/modprobe, which the image does not have).
    pub fn with_softdeps(mut self, modules_softdep: &str) -> Self {
        for line in modules_softdep.lines() {
            let mut words = line.split_whitespace();
            let (Some("softdep"), Some(module)) = (words.next(), words.next()) else { continue };
            let mut pre = Vec::new();
            let mut in_pre = false;
            for w in words {
                match w {
                    "pre:" => in_pre = true,
                    "post:" => in_pre = false,
                    name if in_pre => pre.push(name.to_string()),
                    _ => {}
                }
            }
            if !pre.is_empty() {
                self.softdeps.entry(module.replace('-', "_")).or_default().extend(pre);
            }
        }
        self
    }

    /// A module name, or an exact alias (`crc32c`) → the modules present that provide it.
    fn resolve(&self, name: &str) -> Vec<String> {
        let underscored = name.replace('-', "_");
        if self.deps.contains_key(&underscored) {
            return vec![underscored];
        }
        self.aliases.iter().filter(|(p, m)| p == name && self.deps.contains_key(m)).map(|(_, m)| m.clone()).collect()
    }

    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&name.replace('-', "_"))
    }

    pub fn has(&self, name: &str) -> bool {
        self.deps.contains_key(&name.replace('-', "_"))
    }

    /// Relative paths to load for `wanted`, each dependency before its users, no repeats.
    /// Names neither present nor built in are returned as missing.
    pub fn load_order(&self, wanted: &[String]) -> (Vec<String>, Vec<String>) {
        let mut order = Vec::new();
        let mut seen = BTreeSet::new();
        let mut missing = Vec::new();
        for name in wanted {
            let name = name.replace('-', "_");
            if self.is_builtin(&name) {
                continue;
            }
            match self.deps.get(&name) {
                Some((path, _)) => self.visit(path, &mut seen, &mut order),
                None => missing.push(name),
            }
        }
        (order, missing)
    }

    /// Everything `path` must wait for, in load order: resolved soft `pre:` dependencies,
    /// then its hard dependencies.
    fn prerequisites(&self, path: &str) -> Vec<String> {
        let name = module_name(path);
        let mut pre: Vec<String> = self
            .softdeps
            .get(&name)
            .into_iter()
            .flatten()
            .flat_map(|soft| self.resolve(soft))
            .filter_map(|m| self.deps.get(&m).map(|(p, _)| p.clone()))
            .collect();
        if let Some((_, deps)) = self.deps.get(&name) {
            // depmod lists the deepest dependency last; modprobe loads from the end.
            pre.extend(deps.iter().rev().cloned());
        }
        pre
    }

    /// [`Self::load_order`] cut into waves: every module's prerequisites are in earlier
    /// waves, so the modules of one wave can load in parallel.
    pub fn load_waves(&self, wanted: &[String]) -> (Vec<Vec<String>>, Vec<String>) {
        let (order, missing) = self.load_order(wanted);
        let mut wave_of: BTreeMap<&str, usize> = BTreeMap::new();
        let mut waves: Vec<Vec<String>> = Vec::new();
        for path in &order {
            // `order` has prerequisites first, so their waves are known already.
            let wave = self
                .prerequisites(path)
                .iter()
                .filter_map(|p| wave_of.get(p.as_str()))
                .map(|w| w + 1)
                .max()
                .unwrap_or(0);
            wave_of.insert(path, wave);
            if waves.len() <= wave {
                waves.resize(wave + 1, Vec::new());
            }
            waves[wave].push(path.clone());
        }
        (waves, missing)
    }

    fn visit(&self, path: &str, seen: &mut BTreeSet<String>, order: &mut Vec<String>) {
        if !seen.insert(path.to_string()) {
            return;
        }
        for pre in &self.prerequisites(path) {
            self.visit(pre, seen, order);
        }
        order.push(path.to_string());
    }

    /// Modules (present in this index) whose alias patterns match any of `modaliases`.
    pub fn match_aliases<'a>(&self, modaliases: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let mut found = BTreeSet::new();
        for alias in modaliases {
            for (pattern, module) in &self.aliases {
                if self.deps.contains_key(module) && glob_match(pattern.as_bytes(), alias.as_bytes()) {
                    found.insert(module.clone());
                }
            }
        }
        found.into_iter().collect()
    }
}

/// fnmatch-style matching with `*`, `?` and `[...]` classes, as used in modules.alias.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    backtrack = Some((p, t));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = match_class(&pattern[p..], text[t]) {
                        if matched {
                            p += next;
                            t += 1;
                            continue;
                        }
                    } else if text[t] == b'[' {
                        p += 1;
                        t += 1;
                        continue;
                    }
                }
                c if c == text[t] => {
                    p += 1;
                    t += 1;
                    continue;
                }
                _ => {}
            }
        }
        match backtrack {
            Some((bp, bt)) => {
                p = bp + 1;
                t = bt + 1;
                backtrack = Some((bp, bt + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// `[abc]` / `[a-z]` at the start of `pattern`: (does `c` match, length of the class).
fn match_class(pattern: &[u8], c: u8) -> Option<(bool, usize)> {
    let end = pattern.iter().skip(1).position(|&b| b == b']')? + 1;
    let class = &pattern[1..end];
    let mut matched = false;
    let mut i = 0;
    while i < class.len() {
        if i + 2 < class.len() && class[i + 1] == b'-' {
            matched |= class[i] <= c && c <= class[i + 2];
            i += 3;
        } else {
            matched |= class[i] == c;
            i += 1;
        }
    }
    Some((matched, end + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str =
        "kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko\n\
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko\n\
kernel/net/core/failover.ko:\n\
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko\n\
kernel/drivers/virtio/virtio_pci_modern_dev.ko:\n\
kernel/fs/overlayfs/overlay.ko:\n";
    const ALIAS: &str = "# Aliases extracted from modules themselves.\n\
alias virtio:d00000001v* virtio_net\n\
alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci\n\
alias fs-overlay overlay\n\
alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000\n";

    fn index() -> ModuleIndex {
        ModuleIndex::parse(DEP, "kernel/drivers/virtio/virtio.ko\nkernel/fs/ext4/ext4.ko\n", ALIAS)
    }

    #[test]
    fn dependencies_load_first_and_once() {
        let (order, missing) =
            index().load_order(&["virtio_net".into(), "net-failover".into(), "virtio".into(), "ext4".into()]);
        assert_eq!(
            order,
            ["kernel/net/core/failover.ko", "kernel/drivers/net/net_failover.ko", "kernel/drivers/net/virtio_net.ko"]
        );
        assert!(missing.is_empty(), "built-in modules are not missing: {missing:?}");
    }

    #[test]
    fn soft_dependencies_load_first_through_aliases() {
        let dep = "kernel/lib/libcrc32c.ko:\nkernel/crypto/crc32c_generic.ko:\nkernel/arch/crc32c-intel.ko:\n";
        let alias = "alias crc32c crc32c_intel\nalias crc32c crc32c_generic\nalias crypto-crc32c crc32c_generic\n";
        let index = ModuleIndex::parse(dep, "", alias).with_softdeps("softdep libcrc32c pre: crc32c post: nothing\n");
        let (order, _) = index.load_order(&["libcrc32c".into()]);
        assert_eq!(
            order,
            ["kernel/arch/crc32c-intel.ko", "kernel/crypto/crc32c_generic.ko", "kernel/lib/libcrc32c.ko"]
        );
    }

    #[test]
    fn waves_put_every_module_after_its_prerequisites() {
        let (waves, _) = index().load_waves(&["virtio_net".into(), "virtio_pci".into(), "overlay".into()]);
        assert_eq!(
            waves,
            vec![
                vec![
                    "kernel/net/core/failover.ko",
                    "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
                    "kernel/fs/overlayfs/overlay.ko"
                ],
                vec!["kernel/drivers/net/net_failover.ko", "kernel/drivers/virtio/virtio_pci.ko"],
                vec!["kernel/drivers/net/virtio_net.ko"],
            ]
        );
    }

    #[test]
    fn unknown_modules_are_reported_missing() {
        let (order, missing) = index().load_order(&["overlay".into(), "no_such_mod".into()]);
        assert_eq!(order, ["kernel/fs/overlayfs/overlay.ko"]);
        assert_eq!(missing, ["no_such_mod"]);
    }

    #[test]
    fn modaliases_from_sysfs_pick_drivers_present_in_the_image() {
        let found = index().match_aliases([
            "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00",
            "virtio:d00000001v00001AF4",
            "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00", // e1000 is not in modules.dep here
            "acpi:PNP0A03:",
        ]);
        assert_eq!(found, ["virtio_net", "virtio_pci"]);
    }

    #[test]
    fn glob_handles_classes_and_stars() {
        assert!(glob_match(b"usb:v*p*d*dc[0-9]*", b"usb:v1234p5678d0100dc0"));
        assert!(!glob_match(b"usb:v*p*d*dc[0-9]*", b"usb:v1234p5678d0100dcX"));
        assert!(glob_match(b"a?c*", b"abcdef"));
        assert!(!glob_match(b"abc", b"abcd"));
        assert!(glob_match(b"*", b""));
    }
}
