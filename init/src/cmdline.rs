//! The kernel command line (`/proc/cmdline`), parsed the way the kernel splits it.

/// One parsed kernel command line. Keys may repeat (`ip=` once per interface);
/// [`KernelCmdline::get`] returns the last value, as the kernel does for its own options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelCmdline {
    params: Vec<(String, Option<String>)>,
    /// Words after a lone `--`: the kernel hands them to init as arguments.
    init_args: Vec<String>,
}

impl KernelCmdline {
    /// Splits on whitespace; double quotes group words (`plinth.attributes="rack:r1;zone:a"`)
    /// and are removed, like the kernel's `next_arg`.
    pub fn parse(line: &str) -> Self {
        let mut words = Vec::new();
        let mut current = String::new();
        let mut in_quotes = false;
        let mut has_word = false;
        for c in line.chars() {
            match c {
                '"' => {
                    in_quotes = !in_quotes;
                    has_word = true;
                }
                c if c.is_whitespace() && !in_quotes => {
                    if has_word {
                        words.push(std::mem::take(&mut current));
                        has_word = false;
                    }
                }
                c => {
                    current.push(c);
                    has_word = true;
                }
            }
        }
        if has_word {
            words.push(current);
        }

        let mut cmdline = KernelCmdline::default();
        let mut words = words.into_iter();
        for word in words.by_ref() {
            if word == "--" {
                break;
            }
            match word.split_once('=') {
                Some((key, value)) => cmdline.params.push((key.to_string(), Some(value.to_string()))),
                None => cmdline.params.push((word, None)),
            }
        }
        cmdline.init_args = words.collect();
        cmdline
    }

    /// The last value given for `key`; `None` when absent or given without `=`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params.iter().rev().find(|(k, _)| k == key).and_then(|(_, v)| v.as_deref())
    }

    /// Every value given for `key`, in order.
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.params.iter().filter(move |(k, _)| k == key).filter_map(|(_, v)| v.as_deref())
    }

    /// True when `key` appears, with or without a value.
    pub fn has(&self, key: &str) -> bool {
        self.params.iter().any(|(k, _)| k == key)
    }

    /// All `key=value` pairs whose key starts with `prefix`, prefix stripped, in order.
    pub fn with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a str, Option<&'a str>)> + 'a {
        self.params.iter().filter_map(move |(k, v)| k.strip_prefix(prefix).map(|rest| (rest, v.as_deref())))
    }

    /// Words after `--`.
    pub fn init_args(&self) -> &[String] {
        &self.init_args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_words_and_keeps_quoted_values_whole() {
        let c = KernelCmdline::parse(
            "console=ttyS0 quiet plinth.attributes=\"rack:r1 zone:a\" ip=1.2.3.4::::h:eth0:off ip=:::::eth1:dhcp -- --verbose x\n",
        );
        assert_eq!(c.get("console"), Some("ttyS0"));
        assert!(c.has("quiet"));
        assert_eq!(c.get("quiet"), None);
        assert_eq!(c.get("plinth.attributes"), Some("rack:r1 zone:a"));
        assert_eq!(c.get_all("ip").collect::<Vec<_>>(), vec!["1.2.3.4::::h:eth0:off", ":::::eth1:dhcp"]);
        assert_eq!(c.get("ip"), Some(":::::eth1:dhcp"));
        assert_eq!(c.init_args(), &["--verbose".to_string(), "x".to_string()]);
    }

    #[test]
    fn last_value_wins_and_prefix_lookup_strips_prefix() {
        let c = KernelCmdline::parse("plinth.role=master plinth.role=agent plinth.cpus=2 other=1");
        assert_eq!(c.get("plinth.role"), Some("agent"));
        let rest: Vec<_> = c.with_prefix("plinth.").collect();
        assert_eq!(rest, vec![("role", Some("master")), ("role", Some("agent")), ("cpus", Some("2"))]);
    }

    #[test]
    fn empty_line_has_nothing() {
        let c = KernelCmdline::parse("   \n");
        assert!(!c.has("plinth.role"));
        assert!(c.init_args().is_empty());
    }
}
