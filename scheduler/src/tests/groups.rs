//! Groups: ids resolve against their group, dependencies order levels, cycles are spelled out.
use std::collections::BTreeMap;

use serde_json::json;

use plinth_protocol::{AppDefinition, AppId};

use crate::groups::*;

#[test]
fn ids_resolve_against_the_group() {
    assert_eq!(resolve("/prod", "db").unwrap(), "/prod/db");
    assert_eq!(resolve("/prod/web", "../db").unwrap(), "/prod/db");
    assert_eq!(resolve("/prod", "/other/x").unwrap(), "/other/x");
    assert_eq!(resolve("/prod", "./a/./b").unwrap(), "/prod/a/b");
    assert_eq!(resolve("/prod", "..").unwrap(), "/");
    assert!(resolve("/", "../x").is_err());
    assert!(resolve("/", "Bad").is_err());
    assert_eq!(ancestors("/a/b/c").collect::<Vec<_>>(), vec!["/a/b", "/a", "/"]);
    assert!(is_within("/a/b", "/a") && !is_within("/ab", "/a") && is_within("/x", "/"));
}

fn graph_of(apps: &[(&str, &[&str])], group_deps: &[(&str, &[&str])]) -> (Graph, BTreeMap<AppId, AppDefinition>) {
    let apps: BTreeMap<AppId, AppDefinition> = apps
        .iter()
        .map(|(id, deps)| {
            let def = AppDefinition::from_value(json!({"id": id, "cmd": "x", "dependencies": deps})).expect("valid");
            (AppId::parse(id).expect("id"), def)
        })
        .collect();
    let meta: GroupRecords = group_deps
        .iter()
        .map(|(g, d)| {
            (
                g.to_string(),
                GroupRecord { dependencies: d.iter().map(|s| s.to_string()).collect(), ..GroupRecord::default() },
            )
        })
        .collect();
    let groups = group_paths(apps.keys().map(AppId::as_str), &meta);
    (dependency_graph(&apps, &meta, &groups), apps)
}

#[test]
fn dependencies_order_levels_and_cycles_are_spelled_out() {
    let (graph, _) = graph_of(&[("/p/db", &[]), ("/p/api", &["db"]), ("/p/web", &["../p/api"])], &[]);
    let depth = levels(&graph).expect("no cycle");
    assert!(depth["/p/db"] < depth["/p/api"] && depth["/p/api"] < depth["/p/web"]);

    let (graph, _) = graph_of(&[("/a/x", &[]), ("/b/y", &[])], &[("/a", &["/b"]), ("/b", &["/a"])]);
    let cycle = levels(&graph).expect_err("cycle");
    assert_eq!(cycle.first(), cycle.last());
    let text = cycle.join(" -> ");
    assert!(text.contains("/a") && text.contains("/b"), "{text}");

    let (graph, _) = graph_of(&[("/x", &["/missing"])], &[]);
    assert_eq!(graph.unknown, vec![("/x".to_string(), "/missing".to_string())]);
}

#[test]
fn long_chains_do_not_overflow() {
    let ids: Vec<String> = (0..20_000).map(|i| format!("/c{i}")).collect();
    let deps: Vec<Vec<String>> =
        (0..20_000).map(|i| if i == 0 { vec![] } else { vec![format!("/c{}", i - 1)] }).collect();
    let pairs: Vec<(&str, Vec<&str>)> =
        ids.iter().zip(&deps).map(|(id, d)| (id.as_str(), d.iter().map(String::as_str).collect())).collect();
    let borrowed: Vec<(&str, &[&str])> = pairs.iter().map(|(id, d)| (*id, d.as_slice())).collect();
    let (graph, _) = graph_of(&borrowed, &[]);
    assert_eq!(levels(&graph).expect("no cycle")["/c19999"], 19_999);
}

#[test]
fn a_new_app_closing_a_dependency_cycle_is_named() {
    use crate::tests::{app, core, t};
    let mut c = core();
    assert_eq!(
        c.dependency_cycle(&app(json!({"id": "/x", "cmd": "x", "dependencies": ["/x"]}))),
        Some(vec!["/x".into(), "/x".into()])
    );
    c.create_app(app(json!({"id": "/a", "cmd": "x", "dependencies": ["/b"]})), t(1)).unwrap();
    c.create_app(app(json!({"id": "/c", "cmd": "x"})), t(1)).unwrap();
    let cycle = c.dependency_cycle(&app(json!({"id": "/b", "cmd": "x", "dependencies": ["/a"]})));
    assert_eq!(cycle, Some(vec!["/b".to_string(), "/a".to_string(), "/b".to_string()]));
    assert_eq!(c.dependency_cycle(&app(json!({"id": "/d", "cmd": "x", "dependencies": ["/a", "/c"]}))), None);
}
