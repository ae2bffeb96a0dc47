//! What a VM manager does with the `nvram` library: a new VM's store from its template,
//! Secure Boot keys, one variable, then the same edit across a fleet. The body of
//! [`provision`] between the `README` markers is the README's "Library" section
//! (`tests/library_example.rs` checks both that they are the same and that this runs).
//!
//! `cargo run -p nvram --example vm_manager` runs it on stores in a temporary directory.

use std::path::{Path, PathBuf};

/// Provisions the VM store `vars` from `template` with the platform key certificate
/// `pk_cert`, then sets a boot timeout on every store of `fleet`.
// Kept as the README shows it, a line per step.
#[rustfmt::skip]
pub fn provision(
    template: &Path,
    pk_cert: &Path,
    vars: &Path,
    fleet: &[PathBuf],
) -> Result<(), Box<dyn std::error::Error>> {
    // README: begin
    use nvram::{apply, edit, prepare, secureboot::{self, EnrollPlan, Microsoft}};
    use varstore::{edit::Strategy, guid::EFI_GLOBAL_VARIABLE as GLOBAL};

    // A new VM's store from the distribution's template (an existing one is only checked).
    prepare::prepare(vars, template, false)?;
    // Secure Boot on: the owner's platform key, Microsoft's KEK and db certificates.
    let pk = secureboot::read_input(pk_cert)?;
    let plan = EnrollPlan { microsoft: Some(Microsoft::All), ..EnrollPlan::with_pk(pk) };
    edit::edit_file(vars, |store| secureboot::enroll(store, &plan))?;
    // One variable: locked against a running VM, replaced atomically, all or nothing.
    let (attrs, data) = (edit::parse_attributes("nv,bs,rt")?, edit::DataKind::U16.encode("3")?);
    edit::edit_file(vars, |store| store.set("Timeout", GLOBAL, attrs, &data, None, Strategy::Append))?;
    // The same edit across a fleet, 4 files at a time; a running VM's store is skipped.
    let plan = apply::Plan::new(vec![apply::parse_set("Timeout=u16:5")?]);
    for result in apply::apply_all(fleet, &plan, 4, &|_| {}) {
        println!("{} {}: {}", result.status, result.file.display(), result.detail);
    }
    // README: end
    Ok(())
}

/// Runs [`provision`] on a template, a platform key and a fleet of two stores in a temporary
/// directory.
#[allow(dead_code)] // The example's entry point; the test calls `run`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    run().map(drop)
}

/// [`main`], returning the temporary directory with the stores.
pub fn run() -> Result<tempfile::TempDir, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let template = dir.path().join("OVMF_VARS_4M.fd");
    let blank = varstore::Layout::by_name("ovmf-4m").ok_or("no ovmf-4m layout")?;
    std::fs::write(&template, blank.create())?;
    let pk_cert = dir.path().join("pk.crt");
    std::fs::write(
        &pk_cert,
        nvram::secureboot::generate_pk("Example PK")?.cert_pem,
    )?;
    let fleet: Vec<PathBuf> = (1..=2)
        .map(|i| dir.path().join(format!("vm{i}_VARS.fd")))
        .collect();
    for vm in &fleet {
        std::fs::write(vm, blank.create())?;
    }
    provision(&template, &pk_cert, &dir.path().join("vm0_VARS.fd"), &fleet)?;
    Ok(dir)
}
