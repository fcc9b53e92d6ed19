//! Marathon's JSON shapes as golden fixtures, and the check of a response against them.
//!
//! The fixtures (`protocol/tests/fixtures/marathon/*.json`) name Marathon's response types
//! and, per type, the fields Marathon always writes (`required`) and the ones it writes
//! when set (`optional`), each with a value type:
//!
//! | type expression | a value of it |
//! |---|---|
//! | `string`, `integer`, `number`, `boolean`, `null` | that JSON value (`integer`: no fraction, not `1.0`) |
//! | `datetime` | a string like `2015-02-26T09:21:34.471Z` |
//! | `any`, `object` | anything, any object |
//! | `[T]` | an array of `T` |
//! | `{T}` | an object with any keys whose values are `T` |
//! | `A\|B` | an `A` or a `B` |
//! | a name | that fixture type: an object with exactly its fields, or one of an `enum`'s strings |
//!
//! An object type may `extend` another (its fields are added). [`Fixtures::check`] walks
//! a value recursively and reports every field Marathon does not have, every field it
//! always has that is missing, and every value of the wrong type, with its JSON path.
//! Each file lists its `roots`, the response types it describes; [`Fixtures::unchecked_roots`]
//! names those no test has checked yet, so a contract test can prove it covered them all.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::Value;

/// One fixture file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    /// Where the shapes come from (Marathon's RAML type and version).
    #[allow(dead_code)]
    source: String,
    roots: Vec<String>,
    types: BTreeMap<String, TypeDef>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TypeDef {
    #[serde(default)]
    extends: Option<String>,
    #[serde(default)]
    required: BTreeMap<String, String>,
    #[serde(default)]
    optional: BTreeMap<String, String>,
    #[serde(default, rename = "enum")]
    values: Option<Vec<String>>,
    /// A type that is another expression (`"alias": "[Step]"`).
    #[serde(default)]
    alias: Option<String>,
}

/// Every fixture type, by name.
#[derive(Debug)]
pub struct Fixtures {
    types: BTreeMap<String, TypeDef>,
    roots: BTreeSet<String>,
    checked: Mutex<BTreeSet<String>>,
}

/// Where the Marathon fixtures live in the repository.
pub fn marathon_fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../protocol/tests/fixtures/marathon")
}

impl Fixtures {
    /// Loads `protocol/tests/fixtures/marathon/*.json`.
    pub fn marathon() -> Result<Self> {
        Self::load(&marathon_fixture_dir())
    }

    /// Loads every `*.json` in `dir`; a type named twice, or a name that no file defines,
    /// is an error.
    pub fn load(dir: &Path) -> Result<Self> {
        let mut types = BTreeMap::new();
        let mut roots = BTreeSet::new();
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        entries.sort();
        for path in entries {
            let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            let file: File = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
            for (name, def) in file.types {
                if types.insert(name.clone(), def).is_some() {
                    bail!("fixture type {name} is defined twice ({})", path.display());
                }
            }
            roots.extend(file.roots);
        }
        let fixtures = Fixtures { types, roots, checked: Mutex::new(BTreeSet::new()) };
        fixtures.validate()?;
        Ok(fixtures)
    }

    /// Every name a type expression uses is defined, and so is every root.
    fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        for (name, def) in &self.types {
            let exprs = def.required.values().chain(def.optional.values()).chain(def.alias.iter());
            for expr in exprs.chain(def.extends.iter()) {
                for used in names_in(expr) {
                    if !self.types.contains_key(&used) {
                        problems.push(format!("{name} uses the undefined type {used}"));
                    }
                }
            }
        }
        for root in &self.roots {
            if !self.types.contains_key(root) {
                problems.push(format!("root {root} is not defined"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            bail!("the fixtures are inconsistent: {}", problems.join("; "))
        }
    }

    /// The field set of an object type (with what it extends): required, optional.
    pub fn fields(&self, name: &str) -> Option<(BTreeMap<String, String>, BTreeMap<String, String>)> {
        let def = self.types.get(name)?;
        let (mut required, mut optional) = match &def.extends {
            Some(parent) => self.fields(parent)?,
            None => Default::default(),
        };
        required.extend(def.required.clone());
        optional.extend(def.optional.clone());
        Some((required, optional))
    }

    /// Checks `value` against a type expression; `Err` lists every difference.
    pub fn check(&self, expr: &str, value: &Value) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        self.check_at(expr, value, "", &mut errors);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Panics with every difference (for tests), naming what was checked.
    pub fn assert(&self, what: &str, expr: &str, value: &Value) {
        if let Err(errors) = self.check(expr, value) {
            panic!("{what} does not match Marathon's {expr}:\n  {}\nvalue: {value:#}", errors.join("\n  "));
        }
    }

    /// The roots no check has reached yet.
    pub fn unchecked_roots(&self) -> Vec<String> {
        let checked = self.checked.lock().expect("the checked set is never poisoned");
        self.roots.iter().filter(|r| !checked.contains(*r)).cloned().collect()
    }

    fn check_at(&self, expr: &str, value: &Value, path: &str, errors: &mut Vec<String>) {
        let expr = expr.trim();
        let alternatives = split_top(expr, '|');
        if alternatives.len() > 1 {
            let mut all = Vec::new();
            for alt in &alternatives {
                let mut e = Vec::new();
                self.check_at(alt, value, path, &mut e);
                if e.is_empty() {
                    return;
                }
                all.extend(e);
            }
            errors.push(format!("{}: matches none of {expr} ({})", show(path), all.join("; ")));
            return;
        }
        let wrong = |errors: &mut Vec<String>, wanted: &str| {
            errors.push(format!("{}: expected {wanted}, got {}", show(path), short(value)));
        };
        if let Some(inner) = expr.strip_prefix('[').and_then(|e| e.strip_suffix(']')) {
            match value.as_array() {
                Some(items) => {
                    for (i, item) in items.iter().enumerate() {
                        self.check_at(inner, item, &format!("{path}({i})"), errors);
                    }
                }
                None => wrong(errors, expr),
            }
            return;
        }
        if let Some(inner) = expr.strip_prefix('{').and_then(|e| e.strip_suffix('}')) {
            match value.as_object() {
                Some(map) => {
                    for (key, item) in map {
                        self.check_at(inner, item, &format!("{path}/{key}"), errors);
                    }
                }
                None => wrong(errors, expr),
            }
            return;
        }
        let ok = match expr {
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "null" => value.is_null(),
            "any" => true,
            "object" => value.is_object(),
            "datetime" => value.as_str().is_some_and(is_datetime),
            name => {
                self.check_named(name, value, path, errors);
                return;
            }
        };
        if !ok {
            wrong(errors, expr);
        }
    }

    fn check_named(&self, name: &str, value: &Value, path: &str, errors: &mut Vec<String>) {
        let Some(def) = self.types.get(name) else {
            errors.push(format!("{}: no fixture type {name}", show(path)));
            return;
        };
        self.checked.lock().expect("the checked set is never poisoned").insert(name.to_string());
        if let Some(alias) = &def.alias {
            self.check_at(alias, value, path, errors);
            return;
        }
        if let Some(values) = &def.values {
            if !value.as_str().is_some_and(|v| values.iter().any(|x| x == v)) {
                errors.push(format!("{}: {} is not one of {name} ({})", show(path), short(value), values.join(", ")));
            }
            return;
        }
        let Some(object) = value.as_object() else {
            errors.push(format!("{}: expected a {name} object, got {}", show(path), short(value)));
            return;
        };
        let (required, optional) = self.fields(name).unwrap_or_default();
        for (key, item) in object {
            let item_path = format!("{path}/{key}");
            match required.get(key).or_else(|| optional.get(key)) {
                Some(expr) => self.check_at(expr, item, &item_path, errors),
                None => errors.push(format!("{item_path}: Marathon's {name} has no field '{key}'")),
            }
        }
        for key in required.keys().filter(|k| !object.contains_key(*k)) {
            errors.push(format!("{}: the {name} field '{key}' is missing", show(path)));
        }
    }
}

fn show(path: &str) -> &str {
    if path.is_empty() {
        "/"
    } else {
        path
    }
}

fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.len() > 80 {
        format!("{}...", &text[..text.char_indices().nth(77).map_or(text.len(), |(i, _)| i)])
    } else {
        text
    }
}

/// `2015-02-26T09:21:34.471Z` (seconds' fraction optional).
fn is_datetime(text: &str) -> bool {
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| bytes.get(range).is_some_and(|b| b.iter().all(u8::is_ascii_digit));
    let at = |i: usize, c: u8| bytes.get(i) == Some(&c);
    let date_time = digits(0..4)
        && at(4, b'-')
        && digits(5..7)
        && at(7, b'-')
        && digits(8..10)
        && at(10, b'T')
        && digits(11..13)
        && at(13, b':')
        && digits(14..16)
        && at(16, b':')
        && digits(17..19);
    let rest = text.get(19..).unwrap_or("");
    let rest = rest.strip_suffix('Z').unwrap_or("!");
    date_time
        && (rest.is_empty()
            || rest.strip_prefix('.').is_some_and(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit())))
}

/// Splits at `sep` outside brackets and braces.
fn split_top(expr: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in expr.char_indices() {
        match c {
            '[' | '{' => depth += 1,
            ']' | '}' => depth -= 1,
            c if c == sep && depth == 0 => {
                parts.push(&expr[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&expr[start..]);
    parts
}

/// The type names an expression uses.
fn names_in(expr: &str) -> Vec<String> {
    expr.split(['[', ']', '{', '}', '|'])
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .filter(|w| !matches!(*w, "string" | "integer" | "number" | "boolean" | "null" | "any" | "object" | "datetime"))
        .map(String::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fixtures() -> Fixtures {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("t.json"),
            json!({"source": "test", "roots": ["Thing"], "types": {
                "Thing": {"required": {"id": "string", "n": "integer", "at": "datetime", "kids": "[Kid]",
                                       "labels": "{string}", "mode": "Mode|string"},
                          "optional": {"note": "string|null"}},
                "Kid": {"required": {"x": "number"}},
                "Mode": {"enum": ["A", "B"]},
                "Sub": {"extends": "Thing", "optional": {"extra": "boolean"}}}})
            .to_string(),
        )
        .unwrap();
        Fixtures::load(dir.path()).unwrap()
    }

    #[test]
    fn values_are_checked_recursively_with_paths() {
        let f = fixtures();
        let good = json!({"id": "a", "n": 1, "at": "2015-02-26T09:21:34.471Z", "kids": [{"x": 1.5}],
            "labels": {"k": "v"}, "mode": "A", "note": null});
        assert_eq!(f.check("Thing", &good), Ok(()));
        assert!(f.unchecked_roots().is_empty());
        let bad = json!({"id": "a", "n": 1.0, "at": "yesterday", "kids": [{"x": "1", "y": 2}],
            "labels": {"k": 1}, "agentId": "x"});
        let errors = f.check("Thing", &bad).unwrap_err();
        for expected in [
            "/n: expected integer",
            "/at: expected datetime",
            "/kids(0)/x: expected number",
            "/kids(0)/y: Marathon's Kid has no field 'y'",
            "/labels/k: expected string",
            "/agentId: Marathon's Thing has no field 'agentId'",
            "/: the Thing field 'mode' is missing",
        ] {
            assert!(errors.iter().any(|e| e.starts_with(expected)), "{expected} not in {errors:#?}");
        }
        assert!(f.check("Sub", &json!({"extra": true})).unwrap_err().len() == 6);
        assert!(f.check("[Mode]", &json!(["A", "C"])).is_err());
        assert_eq!(split_top("[A|B]|{C}", '|'), vec!["[A|B]", "{C}"]);
    }
}
