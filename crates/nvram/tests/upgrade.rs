//! `nvram upgrade` and `nvram apply --upgrade-template`: an existing VM's store gets a newer
//! template's Secure Boot databases and keeps everything that is the VM's.
//!
//! The first tests work on files through the `nvram` binary: entries added (with the
//! template's owners), nothing removed, the VM's own variables (boot entries, BootOrder, a
//! MokList under shim's GUID, its own db and dbx entries, anything else) byte-identical, a
//! different PK kept and reported unless `--replace-pk`, a VM in setup mode left in it, a
//! second run changing nothing, `--dry-run` writing nothing, `--json`, a template of another
//! architecture refused, and `apply --upgrade-template` over several files.
//!
//! The last one is the proof with the real Secure Boot firmware (Debian 12's
//! OVMF_CODE_4M.secboot.fd under QEMU 7.2, q35 with SMM, TCG): a VM store copied from an
//! "old" template (own PK/KEK/db = key A) with two boot entries of its own, upgraded with a
//! "new" template (old + db key B + the Authenticode SHA-256 of binary X in dbx; X is signed
//! by A, whose certificate stays in db). Before the upgrade the firmware starts X and refuses
//! Y (signed only by B); after it, it refuses X and starts Y, both through the VM's own boot
//! entries, which BdsDxe names. The Authenticode hash comes from the `authenticode` crate
//! (Google's authenticode-rs, with its `object` PE parser) and sha2.

mod common;

use common::{nvram, nvram_ok, path_str as p, sbsign, self_signed, stderr, stdout};
use nvram::certs::{bundled, distro_certs};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use varstore::guid;
use varstore::secureboot::{SignatureDb, OVMF_ENROLL_DEFAULT_KEYS};

/// shim's variables (MokList, MokSBState, …).
const SHIM_GUID: &str = "605dab50-e046-4300-abb6-3dd810dd8b23";
/// A vendor GUID nothing else uses.
const VENDOR_GUID: &str = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";

/// The variables of a store as (name, guid) → (attributes, data), from `nvram export`.
fn variables(path: &Path) -> BTreeMap<(String, String), (u32, Vec<u8>)> {
    common::exported::<Vec<common::Variable>>(path)
        .into_iter()
        .map(|(name, guid, attr, data)| ((name, guid), (attr, data)))
        .collect()
}

/// The entries (type, owner, data) of a database variable of `path`, in order.
fn entries(path: &Path, name: &str) -> Vec<(String, String, Vec<u8>)> {
    let guid = if name == "PK" || name == "KEK" {
        guid::to_text(guid::EFI_GLOBAL_VARIABLE)
    } else {
        guid::to_text(guid::IMAGE_SECURITY_DATABASE)
    };
    let vars = variables(path);
    let Some((_, data)) = vars.get(&(name.to_string(), guid)) else {
        return Vec::new();
    };
    SignatureDb::parse(data)
        .expect("a signature database")
        .lists
        .iter()
        .flat_map(|l| {
            l.entries.iter().map(|(o, d)| {
                (
                    guid::to_text(l.signature_type),
                    guid::to_text(*o),
                    d.clone(),
                )
            })
        })
        .collect()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, bytes).unwrap();
    path
}

/// A signature list of SHA-256 hashes owned by OVMF's GUID.
fn hash_list(hashes: &[[u8; 32]]) -> Vec<u8> {
    let mut db = SignatureDb::default();
    for h in hashes {
        db.add_sha256(OVMF_ENROLL_DEFAULT_KEYS, *h);
    }
    db.to_bytes()
}

/// The certificate files and stores of the file-level tests.
struct Fleet {
    dir: tempfile::TempDir,
    /// Old template: PK = Microsoft's 2023 PK, KEK 2011, db Windows PCA 2011 + UEFI CA 2011,
    /// the dummy dbx.
    old: PathBuf,
    /// New template: old + KEK 2023, the three 2023 db CAs, two dbx hashes.
    new: PathBuf,
}

impl Fleet {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let pk = write(d, "pk.der", bundled::MICROSOFT_PK_2023);
        let old = d.join("old.fd");
        nvram_ok(&["create", p(&old)]);
        nvram_ok(&[
            "secureboot",
            "enroll",
            p(&old),
            "--pk",
            p(&pk),
            "--microsoft",
            "2011",
        ]);
        let new = d.join("new.fd");
        fs::copy(&old, &new).unwrap();
        nvram_ok(&["secureboot", "add-kek", p(&new), "--microsoft", "2023"]);
        nvram_ok(&["secureboot", "add-db", p(&new), "--microsoft", "2023"]);
        let dbx = write(d, "dbx.esl", &hash_list(&[[0x11; 32], [0x22; 32]]));
        nvram_ok(&["secureboot", "add-dbx", p(&new), p(&dbx)]);
        Fleet { dir, old, new }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A VM created from the old template that has lived: two boot entries and BootOrder,
    /// BootNext, shim's MokList and MokSBState, a variable of its own, the Debian CA added
    /// to its db and a hash of its own in dbx.
    fn vm(&self, name: &str) -> PathBuf {
        let vm = self.path(name);
        fs::copy(&self.old, &vm).unwrap();
        let v = p(&vm);
        for (description, file) in [
            ("debian", r"\EFI\debian\shimx64.efi"),
            ("other", r"\EFI\X.EFI"),
        ] {
            nvram_ok(&[
                "boot",
                "add",
                v,
                "--description",
                description,
                "--file",
                file,
            ]);
        }
        nvram_ok(&["set", v, "BootNext", "--u16", "1"]);
        nvram_ok(&[
            "set",
            v,
            "MokList",
            "--guid",
            SHIM_GUID,
            "--attr",
            "nv,bs",
            "--data-hex",
            "a159c0a594e4a74a87b5ab155c2bf072aabbccdd",
        ]);
        nvram_ok(&[
            "set",
            v,
            "MokSBState",
            "--guid",
            SHIM_GUID,
            "--attr",
            "nv,bs",
            "--u8",
            "1",
        ]);
        nvram_ok(&["set", v, "VmOwn", "--guid", VENDOR_GUID, "--string", "mine"]);
        nvram_ok(&["secureboot", "add-db", v, "--distro", "debian"]);
        let own = write(self.dir.path(), "own-dbx.esl", &hash_list(&[[0x33; 32]]));
        nvram_ok(&["secureboot", "add-dbx", v, p(&own)]);
        vm
    }
}

/// `nvram upgrade --json` on `vm`, returning the report.
fn upgrade_json(vm: &Path, template: &Path, extra: &[&str]) -> Value {
    let mut args = vec![
        "upgrade",
        "--nvram",
        p(vm),
        "--template",
        p(template),
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = nvram_ok(&args);
    serde_json::from_slice(&out.stdout).unwrap()
}

fn report_of<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["variables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in the report: {report:#}"))
}

/// `sub` is `all` with other entries in between: the VM's entries stay, in their order.
fn assert_subsequence<T: PartialEq + std::fmt::Debug>(sub: &[T], all: &[T]) {
    let mut rest = all.iter();
    for item in sub {
        assert!(
            rest.any(|x| x == item),
            "{item:?} is missing or out of order"
        );
    }
}

const SB: [&str; 4] = ["PK", "KEK", "db", "dbx"];

#[test]
fn upgrade_adds_the_templates_entries_and_keeps_the_vms_variables() {
    let fleet = Fleet::new();
    let vm = fleet.vm("vm.fd");
    let before = variables(&vm);
    let before_db: BTreeMap<&str, _> = SB.iter().map(|n| (*n, entries(&vm, n))).collect();

    let report = upgrade_json(&vm, &fleet.new, &[]);
    assert_eq!(report["changed"], true, "{report:#}");
    assert_eq!(report["written"], true);
    assert_eq!(report["pk_kept"], false);

    // Every variable outside KEK/db/dbx is byte-identical (data and attributes).
    let after = variables(&vm);
    for (key, value) in &before {
        if ["KEK", "db", "dbx"].contains(&key.0.as_str()) {
            continue;
        }
        assert_eq!(after.get(key), Some(value), "{key:?} changed");
    }
    let ours: Vec<_> = after
        .keys()
        .filter(|k| !SB.contains(&k.0.as_str()))
        .collect();
    assert_eq!(report["kept_variables"], ours.len());
    for name in [
        "Boot0000",
        "Boot0001",
        "BootOrder",
        "BootNext",
        "MokList",
        "MokSBState",
        "VmOwn",
    ] {
        assert!(ours.iter().any(|k| k.0 == name), "{name} missing");
    }

    // KEK, db, dbx: the VM's entries are all there in their order, and so is every entry
    // of the template, with the template's owner.
    for name in ["KEK", "db", "dbx"] {
        let now = entries(&vm, name);
        assert_subsequence(&before_db[name], &now);
        let template = entries(&fleet.new, name);
        for entry in &template {
            assert!(
                now.contains(entry),
                "{name}: {entry:?} of the template missing"
            );
        }
        let added: Vec<_> = template
            .iter()
            .filter(|e| !before_db[name].iter().any(|b| b.0 == e.0 && b.2 == e.2))
            .collect();
        assert_eq!(now.len(), before_db[name].len() + added.len(), "{name}");
        let r = report_of(&report, name);
        assert_eq!(
            r["added"].as_array().unwrap().len(),
            added.len(),
            "{name}: {r:#}"
        );
        assert_eq!(r["change"], "replaced", "{r:#}");
        assert!(
            r["why"]
                .as_str()
                .unwrap()
                .contains("added from the template"),
            "{r:#}"
        );
    }
    // The VM's own additions survive: the Debian CA in db, its hash in dbx.
    assert!(entries(&vm, "db")
        .iter()
        .any(|e| e.2 == distro_certs::DEBIAN_SECURE_BOOT_CA_2016));
    assert!(entries(&vm, "dbx").iter().any(|e| e.2 == [0x33; 32]));
    // The report names what was added.
    let db = report_of(&report, "db");
    assert_eq!(db["added"].as_array().unwrap().len(), 3);
    assert!(
        db["added"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["description"] == "Windows UEFI CA 2023"),
        "{db:#}"
    );
    assert_eq!(
        report_of(&report, "dbx")["added"].as_array().unwrap().len(),
        2
    );
    assert_eq!(report_of(&report, "PK")["change"], "unchanged");

    // The firmware will accept the result as it is.
    let image = fs::read(&vm).unwrap();
    let store = varstore::Varstore::parse(&image).unwrap();
    assert_eq!(store.verdict(), varstore::FirmwareVerdict::Accept);

    // Again: nothing to do, nothing written.
    let again = upgrade_json(&vm, &fleet.new, &[]);
    assert_eq!(again["changed"], false, "{again:#}");
    assert_eq!(again["written"], false);
    assert!(again["variables"]
        .as_array()
        .unwrap()
        .iter()
        .all(|v| v["change"] == "unchanged"));
    assert_eq!(fs::read(&vm).unwrap(), image);
    // And the human form says so.
    let out = nvram_ok(&["upgrade", "--nvram", p(&vm), "--template", p(&fleet.new)]);
    assert!(stderr(&out).contains("unchanged"), "{}", stderr(&out));
    assert!(stdout(&out).contains("db: unchanged"), "{}", stdout(&out));
}

#[test]
fn dry_run_writes_nothing_and_says_what_would_change() {
    let fleet = Fleet::new();
    let vm = fleet.vm("vm.fd");
    let image = fs::read(&vm).unwrap();
    let out = nvram_ok(&[
        "upgrade",
        "--nvram",
        p(&vm),
        "--template",
        p(&fleet.new),
        "--dry-run",
    ]);
    assert_eq!(fs::read(&vm).unwrap(), image);
    let text = stdout(&out);
    assert!(text.contains("db: replaced: 3 db entries added"), "{text}");
    assert!(text.contains("Microsoft UEFI CA 2023"), "{text}");
    assert!(
        stderr(&out).contains("dry run, nothing written"),
        "{}",
        stderr(&out)
    );
    let report = upgrade_json(&vm, &fleet.new, &["--dry-run"]);
    assert_eq!(report["changed"], true);
    assert_eq!(report["written"], false);
    assert_eq!(fs::read(&vm).unwrap(), image);
}

#[test]
fn a_different_pk_is_kept_unless_replace_pk() {
    let fleet = Fleet::new();
    let vm = fleet.vm("vm.fd");
    // The VM's owner enrolled a PK of their own (the Debian CA certificate serves as one).
    let own = write(
        fleet.dir.path(),
        "own.der",
        distro_certs::DEBIAN_SECURE_BOOT_CA_2016,
    );
    let kek = write(fleet.dir.path(), "kek.der", bundled::MICROSOFT_KEK_2011);
    nvram_ok(&[
        "secureboot",
        "enroll",
        p(&vm),
        "--pk",
        p(&own),
        "--kek",
        p(&kek),
    ]);
    let own_pk = entries(&vm, "PK");

    let out = nvram_ok(&["upgrade", "--nvram", p(&vm), "--template", p(&fleet.new)]);
    assert!(
        stdout(&out).contains("PK: kept: PK differs from the template's"),
        "{}",
        stdout(&out)
    );
    assert!(stderr(&out).contains("--replace-pk"), "{}", stderr(&out));
    assert_eq!(entries(&vm, "PK"), own_pk);
    let report = upgrade_json(&vm, &fleet.new, &[]);
    assert_eq!(report["pk_kept"], true);
    let pk = report_of(&report, "PK");
    assert_eq!(pk["change"], "kept");
    assert!(
        pk["why"]
            .as_str()
            .unwrap()
            .contains("Debian Secure Boot CA"),
        "{pk:#}"
    );

    let report = upgrade_json(&vm, &fleet.new, &["--replace-pk"]);
    assert_eq!(report_of(&report, "PK")["change"], "replaced", "{report:#}");
    assert_eq!(report["pk_kept"], false);
    assert_eq!(entries(&vm, "PK"), entries(&fleet.new, "PK"));
    let again = upgrade_json(&vm, &fleet.new, &["--replace-pk"]);
    assert_eq!(again["changed"], false, "{again:#}");
}

#[test]
fn a_vm_in_setup_mode_stays_in_it_unless_replace_pk() {
    let fleet = Fleet::new();
    let vm = fleet.path("setup.fd");
    nvram_ok(&["create", p(&vm)]);
    let report = upgrade_json(&vm, &fleet.new, &[]);
    assert_eq!(report_of(&report, "PK")["change"], "kept", "{report:#}");
    assert_eq!(report["pk_kept"], true);
    for name in ["KEK", "db", "dbx"] {
        assert_eq!(report_of(&report, name)["change"], "added");
        assert_eq!(entries(&vm, name), entries(&fleet.new, name), "{name}");
    }
    let status = |vm: &Path| -> Value {
        let out = nvram_ok(&["secureboot", "status", p(vm), "--json"]);
        serde_json::from_slice(&out.stdout).unwrap()
    };
    assert_eq!(status(&vm)["setup_mode"], true);

    let report = upgrade_json(&vm, &fleet.new, &["--replace-pk"]);
    assert_eq!(report_of(&report, "PK")["change"], "added", "{report:#}");
    assert_eq!(status(&vm)["setup_mode"], false);
}

#[test]
fn refused_templates_and_stores_leave_the_file_alone() {
    let fleet = Fleet::new();
    let vm = fleet.vm("vm.fd");
    let image = fs::read(&vm).unwrap();
    // A template of another architecture's firmware.
    let aavmf = fleet.path("aavmf.fd");
    nvram_ok(&["create", "--layout", "aavmf", p(&aavmf)]);
    nvram_ok(&["secureboot", "add-db", p(&aavmf), "--microsoft", "2023"]);
    let out = nvram(&["upgrade", "--nvram", p(&vm), "--template", p(&aavmf)]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("aarch64"), "{}", stderr(&out));
    assert_eq!(fs::read(&vm).unwrap(), image);
    // A VM whose db is no signature database.
    nvram_ok(&[
        "set",
        p(&vm),
        "db",
        "--guid",
        "d719b2cb-3d3a-4596-a3bc-dad00e67656f",
        "--attr",
        "nv,bs,rt",
        "--data-hex",
        "0102030405",
    ]);
    let broken = fs::read(&vm).unwrap();
    let out = nvram(&["upgrade", "--nvram", p(&vm), "--template", p(&fleet.new)]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("db in the store is not a valid signature database"),
        "{}",
        stderr(&out)
    );
    assert_eq!(fs::read(&vm).unwrap(), broken);
    // Neither --template nor --firmware.
    let out = nvram(&["upgrade", "--nvram", p(&vm)]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn apply_upgrade_template_over_a_fleet() {
    let fleet = Fleet::new();
    let vms: Vec<PathBuf> = (0..4).map(|i| fleet.vm(&format!("vm{i}.fd"))).collect();
    // vm1 is upgraded already, vm2 has its own PK, vm3 is a fresh copy of the old template.
    nvram_ok(&[
        "upgrade",
        "--nvram",
        p(&vms[1]),
        "--template",
        p(&fleet.new),
    ]);
    let own = write(
        fleet.dir.path(),
        "own.der",
        distro_certs::CANONICAL_MASTER_CA_2012,
    );
    nvram_ok(&[
        "secureboot",
        "enroll",
        p(&vms[2]),
        "--pk",
        p(&own),
        "--microsoft",
        "2011",
    ]);
    fs::copy(&fleet.old, &vms[3]).unwrap();
    let before: Vec<_> = vms.iter().map(|v| variables(v)).collect();

    let mut args = vec!["apply", "--json", "--upgrade-template", p(&fleet.new)];
    args.extend(vms.iter().map(|v| p(v)));
    let out = nvram(&args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let result = |i: usize| results[i]["result"].as_str().unwrap().to_string();
    assert_eq!(
        (result(0), result(1), result(2), result(3)),
        (
            "changed".into(),
            "unchanged".into(),
            "changed".into(),
            "changed".into()
        ),
        "{results:#?}"
    );
    assert!(
        results[0]["detail"]
            .as_str()
            .unwrap()
            .contains("db: replaced (+3)"),
        "{results:#?}"
    );
    assert!(
        results[2]["detail"].as_str().unwrap().contains("PK: kept"),
        "{results:#?}"
    );
    for (i, vm) in vms.iter().enumerate() {
        let after = variables(vm);
        for (key, value) in &before[i] {
            if !["KEK", "db", "dbx"].contains(&key.0.as_str()) {
                assert_eq!(after.get(key), Some(value), "vm{i}: {key:?} changed");
            }
        }
        for name in ["KEK", "db", "dbx"] {
            let now = entries(vm, name);
            for entry in entries(&fleet.new, name) {
                assert!(now.contains(&entry), "vm{i}: {name} lacks {entry:?}");
            }
        }
    }
    // The fleet upgraded like one VM: vm0 is what `nvram upgrade` makes of the same store.
    let single = fleet.vm("single.fd");
    nvram_ok(&[
        "upgrade",
        "--nvram",
        p(&single),
        "--template",
        p(&fleet.new),
    ]);
    assert_eq!(variables(&single), variables(&vms[0]));

    // Again: all unchanged; --dry-run with --replace-pk would change vm2 only.
    let out = nvram_ok(&args);
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        results.iter().all(|r| r["result"] == "unchanged"),
        "{results:#?}"
    );
    let mut dry = vec![
        "apply",
        "--json",
        "--dry-run",
        "--replace-pk",
        "--upgrade-template",
        p(&fleet.new),
    ];
    dry.extend(vms.iter().map(|v| p(v)));
    let out = nvram_ok(&dry);
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let would: Vec<_> = results
        .iter()
        .map(|r| r["result"].as_str().unwrap())
        .collect();
    assert_eq!(
        would,
        ["unchanged", "unchanged", "would-change", "unchanged"]
    );
    // A template that cannot be read stops the run before any file is touched.
    let out = nvram(&[
        "apply",
        "--upgrade-template",
        p(&fleet.path("missing.fd")),
        p(&vms[0]),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

// ---- The proof with the real Secure Boot firmware ----

const SYSTEMD_BOOT: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";

/// The Authenticode SHA-256 of a PE image: what dbx holds to revoke one binary (edk2's
/// DxeImageVerificationLib hashes it so), checked against the digest that the image's own
/// signature (sbsign's) carries.
fn authenticode_sha256(pe: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    let file = object::read::pe::PeFile64::parse(pe).expect("a PE32+ image");
    let mut hasher = sha2::Sha256::new();
    authenticode::authenticode_digest(&file, &mut hasher).expect("authenticode digest");
    let hash: [u8; 32] = hasher.finalize().into();
    let signed: Vec<Vec<u8>> = authenticode::AttributeCertificateIterator::new(&file)
        .expect("a certificate table")
        .expect("a signed image")
        .map(|c| {
            let signature = c.unwrap().get_authenticode_signature().unwrap();
            signature.digest().to_vec()
        })
        .collect();
    assert_eq!(
        signed,
        [hash.to_vec()],
        "the signature's digest is the hash"
    );
    hash
}

/// Whether the firmware refused an image for Secure Boot (edk2 2022.11 says "Security
/// Violation", 2025.02 "Access Denied").
fn refused(line: &str) -> bool {
    line.contains("Security Violation") || line.contains("Access Denied")
}

/// systemd-boot (without loader entries) started.
fn systemd_boot_started(serial: &str) -> bool {
    serial.contains("systemd-boot") || serial.contains("Boot in") || serial.contains("No loader")
}

/// The boot is decided: a loader started, or the firmware fell through to its own shell.
fn decided(serial: &str) -> bool {
    systemd_boot_started(serial) || serial.contains("EFI Internal Shell")
}

/// BdsDxe's line for boot entry `description` containing `what`.
fn bds_line<'a>(serial: &'a str, description: &str, what: &str) -> Option<&'a str> {
    let quoted = format!("\"{description}\"");
    serial
        .lines()
        .find(|l| l.contains("BdsDxe") && l.contains(&quoted) && l.contains(what))
}

fn boot_secure(stack: testkit::Stack, vars: &Path, files: &[(String, Vec<u8>)]) -> String {
    let code = stack.firmware("OVMF_CODE_4M.secboot.fd");
    let mut boot = testkit::OvmfBoot::new(&code, vars, "reset -s\n");
    boot.stack = stack;
    boot.smm = true;
    boot.stop_when = Some(decided);
    boot.files = files.to_vec();
    boot.timeout = std::time::Duration::from_secs(90);
    let started = std::time::Instant::now();
    let serial = match testkit::boot_ovmf(&boot) {
        Ok(outcome) => outcome.serial,
        Err(e @ testkit::BootError::Setup(_)) => panic!("{e}"),
        Err(e) => e.serial().unwrap_or_default().to_string(),
    };
    eprintln!("{} boot took {:?}", stack.name(), started.elapsed());
    serial
}

/// Asserts that entry `description` was refused by Secure Boot and `other` started.
fn assert_refused_then_started(serial: &str, refused_entry: &str, started_entry: &str) {
    let failed = bds_line(serial, refused_entry, "failed to load");
    assert!(
        failed.is_some_and(refused),
        "{refused_entry} was not refused by Secure Boot:\n{serial}"
    );
    assert!(
        bds_line(serial, started_entry, "starting").is_some() && systemd_boot_started(serial),
        "{started_entry} did not start:\n{serial}"
    );
    assert!(
        bds_line(serial, refused_entry, "starting").is_none(),
        "{refused_entry} started:\n{serial}"
    );
}

#[test]
fn firmware_enforces_the_upgraded_databases_and_boots_the_vms_entries() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let stack = testkit::Stack::Debian12;
    let (key_a, cert_a) = self_signed(d, "a", "nvram upgrade test key A");
    let (key_b, cert_b) = self_signed(d, "b", "nvram upgrade test key B");
    let loader = fs::read(SYSTEMD_BOOT).expect("systemd-boot-efi installed");
    // X: systemd-boot with one letter of its DOS stub changed (hashed, never run), so that
    // its Authenticode hash is its own; signed by A. Y: systemd-boot signed only by B.
    let stub = loader
        .windows(8)
        .position(|w| w == b"DOS mode")
        .expect("a DOS stub");
    let mut x_unsigned = loader.clone();
    x_unsigned[stub] = b'd';
    let x = sbsign(
        &key_a,
        &cert_a,
        &write(d, "x-unsigned.efi", &x_unsigned),
        &d.join("x.efi"),
    );
    let y = sbsign(&key_b, &cert_b, Path::new(SYSTEMD_BOOT), &d.join("y.efi"));
    let x_hash = authenticode_sha256(&x);
    assert_ne!(x_hash, authenticode_sha256(&y));

    // The old template trusts A (PK, KEK, db); the new one adds B to db and X's hash to dbx.
    let old = d.join("old.fd");
    fs::copy(stack.firmware("OVMF_VARS_4M.fd"), &old).unwrap();
    common::enroll_own_key(&old, &cert_a);
    let new = d.join("new.fd");
    fs::copy(&old, &new).unwrap();
    nvram_ok(&["secureboot", "add-db", p(&new), p(&cert_b)]);
    let revoke = write(d, "x.esl", &hash_list(&[x_hash]));
    nvram_ok(&["secureboot", "add-dbx", p(&new), p(&revoke)]);

    // The VM: a copy of the old template with two boot entries of its own, X's first.
    let vm = d.join("vm.fd");
    fs::copy(&old, &vm).unwrap();
    let add = |description: &str, file: &str| {
        let out = nvram_ok(&[
            "boot",
            "add",
            p(&vm),
            "--description",
            description,
            "--file",
            file,
        ]);
        stdout(&out).trim().to_string()
    };
    let x_entry = add("VM entry X", r"\EFI\VM\X.EFI");
    let y_entry = add("VM entry Y", r"\EFI\VM\Y.EFI");
    nvram_ok(&[
        "boot",
        "order",
        p(&vm),
        &format!("{},{}", &x_entry[4..], &y_entry[4..]),
    ]);
    let files = vec![
        ("EFI/VM/X.EFI".to_string(), x),
        ("EFI/VM/Y.EFI".to_string(), y),
    ];

    // Control: before the upgrade the firmware refuses Y (B is not in db) and starts X. The
    // entries are tried Y first here (BootOrder of a copy) so that one boot shows both.
    let control = d.join("control.fd");
    fs::copy(&vm, &control).unwrap();
    nvram_ok(&[
        "boot",
        "order",
        p(&control),
        &format!("{},{}", &y_entry[4..], &x_entry[4..]),
    ]);
    let serial = boot_secure(stack, &control, &files);
    assert_refused_then_started(&serial, "VM entry Y", "VM entry X");

    // The upgrade: the VM's boot variables are byte-identical afterwards.
    let boot_vars = |path: &Path| -> Vec<_> {
        variables(path)
            .into_iter()
            .filter(|((name, _), _)| name.starts_with("Boot"))
            .collect()
    };
    let before = boot_vars(&vm);
    assert_eq!(before.len(), 3, "{before:?}");
    let report = upgrade_json(&vm, &new, &[]);
    assert_eq!(
        report_of(&report, "db")["added"].as_array().unwrap().len(),
        1,
        "{report:#}"
    );
    assert_eq!(
        report_of(&report, "dbx")["added"].as_array().unwrap().len(),
        1
    );
    assert_eq!(boot_vars(&vm), before);
    assert!(
        entries(&vm, "db").iter().any(|e| e.2 == pem_der(&cert_a)),
        "A stays in db"
    );

    // After: X (signed by A, still in db, but its hash in dbx) is refused and Y (signed only
    // by B) starts, both through the VM's entries in the VM's order.
    let upgraded = fs::read(&vm).unwrap();
    let serial = boot_secure(stack, &vm, &files);
    common::assert_bds_tried(&serial, &x_entry, "VM entry X");
    common::assert_bds_tried(&serial, &y_entry, "VM entry Y");
    assert_refused_then_started(&serial, "VM entry X", "VM entry Y");

    // The same store under QEMU 10.0 with edk2 2025.02.
    let current = testkit::Stack::Current;
    fs::write(&vm, &upgraded).unwrap();
    let serial = boot_secure(current, &vm, &files);
    assert_refused_then_started(&serial, "VM entry X", "VM entry Y");
}

/// The DER of a PEM certificate file.
fn pem_der(pem: &Path) -> Vec<u8> {
    match nvram::certs::read_signature_input(&fs::read(pem).unwrap()).unwrap() {
        nvram::certs::SignatureInput::Certificates(mut certs) => certs.remove(0),
        other => panic!("{other:?}"),
    }
}

/// `--firmware auto` takes the new template from the QEMU firmware descriptor that fits, as
/// `nvram reset` does, and the report names the descriptor.
#[test]
fn upgrade_from_the_template_of_a_firmware_descriptor() {
    let fleet = Fleet::new();
    let vm = fleet.vm("vm.fd");
    let descriptors = fleet.path("firmware");
    fs::create_dir(&descriptors).unwrap();
    let descriptor = serde_json::json!({
        "description": "OVMF with the new template",
        "interface-types": ["uefi"],
        "mapping": {
            "device": "flash",
            "executable": {"filename": "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd", "format": "raw"},
            "nvram-template": {"filename": p(&fleet.new), "format": "raw"},
        },
        "targets": [{"architecture": "x86_64", "machines": ["pc-q35-*"]}],
        "features": ["secure-boot", "enrolled-keys", "requires-smm"],
        "tags": [],
    });
    write(
        &descriptors,
        "30-new.json",
        descriptor.to_string().as_bytes(),
    );
    let out = nvram_ok(&[
        "upgrade",
        "--nvram",
        p(&vm),
        "--firmware",
        "auto",
        "--firmware-dir",
        p(&descriptors),
        "--arch",
        "x86_64",
        "--machine",
        "pc-q35-7.2",
        "--feature",
        "enrolled-keys",
        "--json",
    ]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["firmware"]["name"], "30-new.json", "{report:#}");
    assert_eq!(report["template"], p(&fleet.new));
    assert_eq!(
        report_of(&report, "db")["added"].as_array().unwrap().len(),
        3
    );
    for entry in entries(&fleet.new, "db") {
        assert!(entries(&vm, "db").contains(&entry));
    }
}
