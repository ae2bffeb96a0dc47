//! The README's "Library" section is `examples/vm_manager.rs`, and that example works: the
//! store it provisions has Secure Boot on with Microsoft's certificates and the timeout it
//! set, and its fleet edit reached every store.

#[path = "../examples/vm_manager.rs"]
mod vm_manager;

use varstore::guid::EFI_GLOBAL_VARIABLE;

fn timeout_of(path: &std::path::Path) -> Vec<u8> {
    let image = std::fs::read(path).unwrap();
    let store = varstore::Varstore::parse(&image).unwrap();
    let found = nvram::edit::find_variable(&store, "Timeout", Some(EFI_GLOBAL_VARIABLE));
    found.unwrap().data.to_vec()
}

#[test]
fn the_example_provisions_a_vm_and_edits_the_fleet() {
    let dir = vm_manager::run().unwrap();
    let vars = dir.path().join("vm0_VARS.fd");
    let image = std::fs::read(&vars).unwrap();
    let status = nvram::secureboot::status(&varstore::Varstore::parse(&image).unwrap());
    assert!(!status.setup_mode && status.secure_boot_at_next_boot);
    assert!(status.microsoft.iter().all(|c| c.present));
    assert_eq!(timeout_of(&vars), [3, 0]);
    for vm in ["vm1_VARS.fd", "vm2_VARS.fd"] {
        assert_eq!(timeout_of(&dir.path().join(vm)), [5, 0], "{vm}");
    }
}

#[test]
fn the_readme_shows_the_example() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = std::fs::read_to_string(root.join("examples/vm_manager.rs")).unwrap();
    let readme = std::fs::read_to_string(root.join("../../README.md")).unwrap();
    let body: Vec<&str> = example
        .lines()
        .skip_while(|l| !l.contains("// README: begin"))
        .skip(1)
        .take_while(|l| !l.contains("// README: end"))
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect();
    let shown: Vec<&str> = readme
        .lines()
        .skip_while(|l| *l != "## Library")
        .skip_while(|l| *l != "```rust")
        .skip(1)
        .take_while(|l| *l != "```")
        .collect();
    assert!(!body.is_empty());
    assert_eq!(
        shown, body,
        "README.md's Library section differs from examples/vm_manager.rs"
    );
}
