//! Group paths: parents and ancestors, containment, and resolving the relative ids and
//! dependencies of a group body (`.`, `..`).
use plinth_protocol::AppId;

/// The group holding `path` (`/a/b` → `/a`, `/a` → `/`).
pub fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// Every enclosing group of `path`, nearest first, ending with `/`.
pub fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    let mut current = path;
    std::iter::from_fn(move || {
        if current == "/" {
            return None;
        }
        current = parent(current);
        Some(current)
    })
}

/// Whether `path` is `group` or lies inside it.
pub fn is_within(path: &str, group: &str) -> bool {
    group == "/" || path == group || path.strip_prefix(group).is_some_and(|rest| rest.starts_with('/'))
}

/// Resolves a Marathon id or dependency against a group: absolute ids stay, relative
/// ones join the group, `.` and `..` segments are followed. Segments are checked as app
/// ids are. The root itself comes back as `/`.
pub fn resolve(base: &str, raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err("must not be empty".into());
    }
    let mut segments: Vec<&str> =
        if raw.starts_with('/') { Vec::new() } else { base.split('/').filter(|s| !s.is_empty()).collect() };
    for segment in raw.split('/').filter(|s| !s.is_empty()) {
        match segment {
            "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err(format!("'{raw}' leads above the root group"));
                }
            }
            s => segments.push(s),
        }
    }
    if segments.is_empty() {
        return Ok("/".into());
    }
    let path = format!("/{}", segments.join("/"));
    AppId::parse(&path).map_err(|e| e.to_string())?;
    plinth_protocol::check_id_bounds(&path)?;
    Ok(path)
}

/// A violation path under a request path prefix (`""` is the body's top level).
pub fn under(prefix: &str, rest: &str) -> String {
    match (prefix, rest) {
        ("", "") => "/".into(),
        ("", rest) => rest.into(),
        (prefix, "/") | (prefix, "") => prefix.into(),
        (prefix, rest) => format!("{prefix}{rest}"),
    }
}
