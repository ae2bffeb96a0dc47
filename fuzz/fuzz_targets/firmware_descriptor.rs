//! QEMU firmware descriptors (`nvram::firmware::parse_descriptor`, what `Catalog::load`
//! reads from each `*.json` file) and the selection that runs on them (`Criteria::check`,
//! the machine globs). No panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nvram::firmware::{glob_match, parse_descriptor, Criteria, Firmware};

fuzz_target!(|data: &[u8]| {
    let (descriptor, raw) = match parse_descriptor(data) {
        Ok(parsed) => parsed,
        Err(reason) => {
            let _ = reason;
            return;
        }
    };
    let firmware = Firmware {
        name: "60-fuzz.json".into(),
        path: "/nonexistent/60-fuzz.json".into(),
        descriptor,
        raw,
    };
    let _ = (
        firmware.flash(),
        firmware.nvram_template(),
        firmware.executable(),
        firmware.mapping_summary(),
    );
    for architecture in ["x86_64", "aarch64"] {
        let criteria = Criteria::uefi_varstore(architecture)
            .machine("pc-q35-10.0")
            .feature("secure-boot");
        let _ = criteria.check(&firmware);
    }
    for target in &firmware.descriptor.targets {
        for machine in &target.machines {
            let _ = glob_match(machine.as_bytes(), b"pc-q35-7.2");
            let _ = glob_match(b"pc-*", machine.as_bytes());
        }
    }
});
