//! The Microsoft 2023 rollout over a libvirt fleet: 1,000 defined (not running) domains
//! (`<os firmware='efi'>`, TCG, q35) whose stores are copies of Debian's
//! `OVMF_VARS_4M.ms.fd` (the 2011 certificates) at the path libvirt gives them
//! (`/var/lib/libvirt/qemu/nvram/NAME_VARS.fd`), edited with one
//! `nvram apply --libvirt --all --add-microsoft 2023 --add-microsoft-dbx 2023`, against the
//! loop an operator writes without nvram, run over the same stores in the same run: for each
//! domain `virsh domstate` (skip it if it runs) and `virsh dumpxml` (where is its store), then
//! `virt-fw-vars --inplace STORE --add-kek … --add-db …×3 --add-dbx dbxupdate.auth`.
//!
//! Also timed: `nvram vms --json` over the fleet (listing with a few batched `virsh` calls and
//! checking every store), and listing the naive way, one `virsh dumpxml` process per domain.
//!
//! Run with `cargo bench -p nvram --bench libvirt_fleet` as root with libvirtd running
//! (`scripts/test` starts it; `virtlogd -d; libvirtd -d` by hand) after
//! `scripts/install-test-deps`. `NVRAM_LIBVIRT_FLEET` sets the number of domains (default
//! 1000), `NVRAM_LIBVIRT_FLEET_LOOP` how many of them the virt-fw-vars loop covers (default:
//! all; the loop's time is then scaled to the fleet, and said so). The domains are defined in
//! one `virsh` process from XML files and undefined with their stores at the end, also when a
//! step panics. `--all` means every domain of the daemon: run it on a libvirtd without other
//! domains whose stores must not be touched.

#[path = "common/mod.rs"]
mod common;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use common::{env_or, run};

/// The fleet's domains, undefined with their stores on drop (batched, like the definition).
struct Fleet {
    uri: String,
    names: Vec<String>,
}

impl Fleet {
    /// Runs `virsh -c URI 'CMD NAME; CMD NAME; …'` over every name, in batches that keep
    /// the single argument under Linux's 128 KiB.
    fn batched(&self, command: impl Fn(&str) -> String) -> Result<(), String> {
        for chunk in self.names.chunks(1000) {
            let script: String = chunk.iter().map(|n| command(n) + "; ").collect();
            let out = Command::new("virsh")
                .args(["-q", "-c", &self.uri, &script])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .output()
                .map_err(|e| e.to_string())?;
            if !out.status.success() {
                return Err(String::from_utf8_lossy(&out.stderr).into_owned());
            }
        }
        Ok(())
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let started = Instant::now();
        if let Err(e) = self.batched(|n| format!("undefine --nvram {n}")) {
            eprintln!("cleanup: {e}");
        }
        eprintln!(
            "undefined {} domains with their stores in {:.1} s",
            self.names.len(),
            started.elapsed().as_secs_f64()
        );
    }
}

fn main() {
    let Some(libvirt) = testkit::libvirt::Libvirt::require() else {
        return;
    };
    let uri = libvirt.uri().to_string();
    let nvram = PathBuf::from(env!("CARGO_BIN_EXE_nvram"));
    let count = env_or("NVRAM_LIBVIRT_FLEET", 1000);
    let looped = env_or("NVRAM_LIBVIRT_FLEET_LOOP", count).min(count);
    let peer = testkit::virt_fw_vars();
    let emulator = testkit::Stack::Debian12.qemu("x86_64");
    let template = std::fs::read("/usr/share/OVMF/OVMF_VARS_4M.ms.fd")
        .expect("Debian 12's ovmf package (scripts/install-test-deps)");
    let store_dir = Path::new("/var/lib/libvirt/qemu/nvram");
    let work = tempfile::tempdir().unwrap();
    let before = libvirt
        .virsh(&["list", "--all", "--uuid"])
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count();

    // Define the fleet from XML files, in one virsh process; the stores as libvirt would have
    // created them from the Microsoft-enrolled template.
    let started = Instant::now();
    let mut fleet = Fleet {
        uri: uri.clone(),
        names: Vec::new(),
    };
    let mut script = String::new();
    for i in 0..count {
        let name = format!("nvram-bench-{}-{i:04}", std::process::id());
        let xml = work.path().join(format!("{name}.xml"));
        std::fs::write(
            &xml,
            format!(
                "<domain type='qemu'><name>{name}</name><memory unit='MiB'>256</memory>\
                 <os firmware='efi'><type arch='x86_64' machine='q35'>hvm</type></os>\
                 <features><acpi/></features><devices><emulator>{}</emulator></devices>\
                 </domain>",
                emulator.display()
            ),
        )
        .unwrap();
        let store = store_dir.join(format!("{name}_VARS.fd"));
        std::fs::write(&store, &template).unwrap();
        script.push_str(&format!("define {}; ", xml.display()));
        fleet.names.push(name);
    }
    for chunk in script
        .split_inclusive("; ")
        .collect::<Vec<_>>()
        .chunks(1000)
    {
        run(Command::new("virsh").args(["-q", "-c", &uri, &chunk.concat()]));
    }
    let defined = started.elapsed();
    println!(
        "defined {count} domains with their stores in one virsh process: {:.1} s ({before} other domains on the daemon)",
        defined.as_secs_f64()
    );

    // Listing: nvram vms (batched virsh, every store checked) against a virsh per domain.
    let started = Instant::now();
    let out = run(Command::new(&nvram).args(["vms", "--connect", &uri, "--json"]));
    let vms = started.elapsed();
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ours = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["name"].as_str().unwrap().starts_with("nvram-bench-"))
        .filter(|d| d["health"]["status"] == "healthy")
        .count();
    assert_eq!(
        ours, count,
        "every bench domain listed with a healthy store"
    );
    let sample = 50.min(count);
    let started = Instant::now();
    for name in &fleet.names[..sample] {
        run(Command::new("virsh").args(["-q", "-c", &uri, "dumpxml", name]));
    }
    let per_dumpxml = started.elapsed() / sample as u32;
    println!(
        "nvram vms --json ({} domains, stores checked): {:.2} s; one virsh dumpxml per domain: {:.1} ms each, {:.1} s for {count}",
        listed.as_array().unwrap().len(),
        vms.as_secs_f64(),
        per_dumpxml.as_secs_f64() * 1e3,
        per_dumpxml.as_secs_f64() * count as f64
    );

    // nvram: one command for the fleet.
    let started = Instant::now();
    let out = run(Command::new(&nvram).args([
        "apply",
        "--libvirt",
        "--connect",
        &uri,
        "--all",
        "--json",
        "--add-microsoft",
        "2023",
        "--add-microsoft-dbx",
        "2023",
    ]));
    let ours_time = started.elapsed();
    let results: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let changed = results
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["domain"].as_str().unwrap().starts_with("nvram-bench-"))
        .filter(|r| r["result"] == "changed")
        .count();
    assert_eq!(changed, count, "every bench store changed");
    println!(
        "nvram apply --libvirt --all --add-microsoft 2023 --add-microsoft-dbx 2023 ({count} domains): {:.2} s",
        ours_time.as_secs_f64()
    );

    // The loop, over the same stores put back as they were.
    let mut peer_args = common::rollout::virt_fw_vars_microsoft_2023_args(work.path());
    let auth = work.path().join("dbxupdate.auth");
    std::fs::write(&auth, nvram::certs::microsoft_dbx::DBX_2023_X86_64).unwrap();
    peer_args.extend(["--add-dbx".into(), auth.into_os_string()]);
    for name in &fleet.names[..looped] {
        std::fs::write(store_dir.join(format!("{name}_VARS.fd")), &template).unwrap();
    }
    let started = Instant::now();
    for name in &fleet.names[..looped] {
        let state = run(Command::new("virsh").args(["-q", "-c", &uri, "domstate", name]));
        if String::from_utf8_lossy(&state.stdout).trim() != "shut off" {
            continue;
        }
        run(Command::new("virsh").args(["-q", "-c", &uri, "dumpxml", name]));
        let store = store_dir.join(format!("{name}_VARS.fd"));
        run(Command::new(&peer)
            .arg("--inplace")
            .arg(&store)
            .args(&peer_args)
            .stdout(Stdio::null()));
    }
    let loop_time = started.elapsed();
    let loop_fleet = loop_time.as_secs_f64() * count as f64 / looped as f64;
    // Same result as nvram's, for the first store: the same KEK, db and dbx.
    let ours_first = work.path().join("ours.fd");
    std::fs::write(&ours_first, &template).unwrap();
    run(Command::new(&nvram)
        .args([
            "apply",
            "--add-microsoft",
            "2023",
            "--add-microsoft-dbx",
            "2023",
        ])
        .arg(&ours_first));
    let peer_first = store_dir.join(format!("{}_VARS.fd", fleet.names[0]));
    let same: Vec<String> = ["KEK", "db", "dbx"]
        .iter()
        .map(|var| {
            let get = |f: &Path| {
                run(Command::new(&nvram)
                    .args(["get"])
                    .arg(f)
                    .args([var, "--hex"]))
                .stdout
            };
            let verdict = if get(&ours_first) == get(&peer_first) {
                "identical"
            } else {
                "different"
            };
            format!("{var} {verdict}")
        })
        .collect();
    println!("nvram's store against virt-fw-vars': {}", same.join(", "));
    println!(
        "loop of virsh domstate + virsh dumpxml + virt-fw-vars --inplace --add-kek/--add-db/--add-dbx ({looped} domains): {:.1} s{}",
        loop_time.as_secs_f64(),
        if looped == count {
            String::new()
        } else {
            format!(", {loop_fleet:.0} s scaled to {count}")
        }
    );
    println!(
        "nvram is {:.0}x faster than the loop ({:.2} s against {:.0} s for {count} domains)",
        loop_fleet / ours_time.as_secs_f64(),
        ours_time.as_secs_f64(),
        loop_fleet
    );
    drop(fleet);
}
