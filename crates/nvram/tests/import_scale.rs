//! A large import is correct (issue 14): 3,275 variables, as many 80-byte records as the
//! 256 KiB variable area holds, into a blank 64 MiB `aavmf` and a blank `ovmf-4m` store,
//! with either strategy; then the same list with new data over it (every variable replaced,
//! which needs compactions on the way). Afterwards every variable is live with its data and
//! the store is healthy. How fast it goes is measured by `benches/import.rs`, not here.

use nvram::edit::import;
use varstore::edit::{Editor, Strategy};
use varstore::json::VariableList;
use varstore::{Guid, Layout, Varstore};

const GUID: &str = "3b0b8b7e-64a2-4c2a-a0a4-6c4d3a6e7a10";
const COUNT: usize = 3275;

fn list(count: usize, salt: u8) -> VariableList {
    let variables: Vec<String> = (0..count)
        .map(|i| {
            format!(
                r#"{{"name": "Var{i:04}", "guid": "{GUID}", "attr": 7, "data": "{:02x}"}}"#,
                (i as u8).wrapping_add(salt)
            )
        })
        .collect();
    let json = format!(
        r#"{{"version": 2, "variables": [{}]}}"#,
        variables.join(",")
    );
    VariableList::from_json(json.as_bytes()).unwrap()
}

fn assert_holds(image: &[u8], count: usize, salt: u8) {
    let store = Varstore::parse(image).unwrap();
    assert!(store.is_healthy(), "{:?}", store.findings());
    let live = store.live_variables();
    assert_eq!(live.len(), count);
    let guid = Guid::try_parse(GUID).unwrap();
    for (i, v) in live.iter().enumerate() {
        assert_eq!(v.guid, guid);
        assert_eq!(v.attributes.0, 7);
        let n: usize = v.name()[3..].parse().unwrap();
        assert_eq!(v.data, [(n as u8).wrapping_add(salt)], "{}", v.name());
        // Nothing but these variables, each once.
        assert!(n < count, "variable {i}: {}", v.name());
    }
    let mut names: Vec<String> = live.iter().map(|v| v.name()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), count);
}

fn scale(layout: &str, strategy: Strategy) {
    let image = Layout::by_name(layout).unwrap().create();
    let mut editor = Editor::new(&image).unwrap();
    let report = import(&mut editor, &list(COUNT, 0), strategy, false).unwrap();
    assert_eq!(report.added, COUNT, "{layout} {strategy}");
    let image = editor.finish();
    assert_holds(&image, COUNT, 0);

    // The first 500 again with other data: replaced in a full store, so every one needs a
    // compaction (the firmware's way too); the rest unchanged.
    let mut editor = Editor::new(&image).unwrap();
    let mut again = list(COUNT, 0);
    again.variables[..500].clone_from_slice(&list(500, 1).variables);
    let report = import(&mut editor, &again, strategy, false).unwrap();
    assert_eq!((report.replaced, report.unchanged), (500, COUNT - 500));
    assert!(report.compacted);
    let image = editor.finish();
    let store = Varstore::parse(&image).unwrap();
    assert!(store.is_healthy());
    assert_eq!(store.live_variables().len(), COUNT);
    assert_eq!(store.find("Var0499", None).unwrap().data, [0xF4]);
    assert_eq!(store.find("Var0500", None).unwrap().data, [0xF4]);

    // With --replace-all and the first half of the list: the other half is deleted.
    let mut editor = Editor::new(&image).unwrap();
    let report = import(&mut editor, &list(COUNT / 2, 1), strategy, true).unwrap();
    assert_eq!(report.deleted, COUNT - COUNT / 2);
    assert_eq!(report.replaced + report.unchanged, COUNT / 2);
    assert_holds(&editor.finish(), COUNT / 2, 1);
}

#[test]
fn a_full_store_of_variables_imports_into_aavmf() {
    scale("aavmf", Strategy::Append);
}

#[test]
fn a_full_store_of_variables_imports_into_ovmf_4m() {
    scale("ovmf-4m", Strategy::Append);
    scale("ovmf-4m", Strategy::Compact);
}

/// An import with the compact strategy, which compacts once at the end, gives the bytes of
/// compacting after every variable, on a store with dead records, replacements, additions
/// and --replace-all deletions.
#[test]
fn a_compact_import_equals_compacting_after_each_variable() {
    let g = Guid::try_parse(GUID).unwrap();
    let attrs = varstore::Attributes(7);
    let mut editor = Editor::new(&Layout::by_name("ovmf-4m").unwrap().create()).unwrap();
    for i in 0..40u8 {
        let name = format!("Old{}", i % 25);
        editor
            .set(&name, g, attrs, &[i; 30], None, Strategy::Append)
            .unwrap();
    }
    let start = editor.finish();
    let json = format!(
        r#"{{"variables": [
        {{"name": "Old3", "guid": "{GUID}", "attr": 7, "data": "aa"}},
        {{"name": "New1", "guid": "{GUID}", "attr": 7, "data": "bb"}},
        {{"name": "Old20", "guid": "{GUID}", "attr": 7, "data": "{}"}},
        {{"name": "Old7", "guid": "{GUID}", "attr": 7, "data": "cc"}},
        {{"name": "New2", "guid": "{GUID}", "attr": 7, "data": "dd"}},
        {{"name": "Old1", "guid": "{GUID}", "attr": 7, "data": "ee"}}]}}"#,
        "27".repeat(30)
    );
    let list = VariableList::from_json(json.as_bytes()).unwrap();
    for replace_all in [false, true] {
        let mut batched = Editor::new(&start).unwrap();
        import(&mut batched, &list, Strategy::Compact, replace_all).unwrap();

        let mut each = Editor::new(&start).unwrap();
        if replace_all {
            let keep: Vec<&str> = list.variables.iter().map(|v| v.name.as_str()).collect();
            let store = Varstore::parse(&start).unwrap();
            let extra: Vec<String> = store
                .live_variables()
                .iter()
                .map(|r| r.name())
                .filter(|n| !keep.contains(&n.as_str()))
                .collect();
            for name in extra {
                each.delete(&name, g, Strategy::Compact).unwrap();
            }
        }
        for v in &list.variables {
            let data = hex::decode(&v.data).unwrap();
            each.set(&v.name, g, attrs, &data, None, Strategy::Compact)
                .unwrap();
        }
        assert!(
            batched.finish() == each.finish(),
            "replace_all {replace_all}: the images differ"
        );
    }
}
