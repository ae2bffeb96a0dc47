//! Building UEFI shell `setvar` command lines.

use crate::{ATTR_BS, ATTR_NV, ATTR_RT};

/// A UEFI shell line that creates variable `name` in vendor `guid` with
/// attributes `attrs` and exactly the bytes `data`.
///
/// # How the shell's `setvar` works (edk2 `ShellPkg` as in Debian's ovmf 2022.11, verified under QEMU)
///
/// `setvar NAME [-guid GUID] [-bs] [-rt] [-nv] =DATA [=DATA ...]`
///
/// * Attributes: only `-bs` (0x2), `-rt` (0x4, *and* implies BS) and `-nv`
///   (0x1) exist, so only NV/BS/RT combinations can be set; HR, AW and AT
///   cannot. The flags apply **only when the variable does not exist yet**:
///   for an existing variable `setvar` keeps its current attributes and
///   silently ignores the flags.
/// * Without `-guid` the EFI global variable GUID
///   (`8be4df61-93ca-11d2-aa0d-00e098032b8c`) is used.
/// * Every `=DATA` argument appends bytes; the type is chosen from the
///   argument's text:
///   - `=0x1234` is a *hex number*, stored little-endian in 1, 2, 4 or 8 bytes
///     depending on the digit count (1–2, 3–4, 5–8, 9–16 digits), so
///     `=0x0102ff` stores `ff 02 01 00` (not `01 02 ff`);
///   - `=H0102ff`, or bare `=0102ff` (even number of hex digits), is a *byte
///     array*, stored in order: `01 02 ff`;
///   - `=Stext` (or any other text) is ASCII without a terminating NUL,
///     `=Ltext` is UCS-2 without a terminating NUL, `=P<text device path>` or
///     `=--<path>` is a device path;
///   - the shell strips double quotes *before* `setvar` sees the argument, so
///     `="ab"` is the bare hex array `ab` (one byte 0xab!), and `=L"hi"` is
///     `Lhi`, i.e. UCS-2 `h i`;
///   - a lone `=` means empty data, which *deletes* the variable.
///
/// This function therefore always emits one `=H<hex>` byte array, the only
/// form that stores arbitrary bytes verbatim and cannot be misread.
///
/// # Panics
///
/// On arguments the shell could not carry out exactly, since a silently wrong
/// setup would let a test pass for the wrong reason:
/// * `attrs` other than `BS`, `BS|RT`, `NV|BS` or `NV|BS|RT`;
/// * empty `data` (that would delete the variable instead);
/// * a `guid` not in the `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` form;
/// * a `name` with characters other than ASCII letters, digits, `_`, `-` and
///   `.`, or starting with `-`: the shell gives meaning to spaces, quotes,
///   `^`, `%`, `#`, `>` and others, and a leading `-` looks like a flag.
pub fn setvar_command(name: &str, guid: &str, attrs: u32, data: &[u8]) -> String {
    let name_ok = !name.is_empty()
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    assert!(
        name_ok,
        "setvar_command: variable name {name:?} is not safe to pass through the UEFI shell"
    );
    assert!(
        is_guid(guid),
        "setvar_command: {guid:?} is not a GUID like 4a1b8e36-0bd3-4c35-9b5a-0f7e2f3c6d01"
    );
    assert!(
        attrs & !(ATTR_NV | ATTR_BS | ATTR_RT) == 0 && attrs & ATTR_BS != 0,
        "setvar_command: attributes {attrs:#x} cannot be set by the shell's setvar \
         (only NV, BS and RT exist, and BS is required)"
    );
    assert!(
        !data.is_empty(),
        "setvar_command: empty data would delete the variable, not set it"
    );

    let mut line = format!("setvar {name} -guid {}", guid.to_ascii_lowercase());
    if attrs & ATTR_NV != 0 {
        line.push_str(" -nv");
    }
    line.push_str(" -bs");
    if attrs & ATTR_RT != 0 {
        line.push_str(" -rt");
    }
    line.push_str(" =H");
    for byte in data {
        line.push_str(&format!("{byte:02x}"));
    }
    line
}

/// Whether `s` is a GUID in the canonical 8-4-4-4-12 hex-digit form.
pub(crate) fn is_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUID: &str = "4A1B8E36-0BD3-4C35-9B5A-0F7E2F3C6D01";

    #[test]
    fn emits_a_hex_byte_array_and_flags() {
        assert_eq!(
            setvar_command("Var_1", GUID, ATTR_NV | ATTR_BS | ATTR_RT, &[0, 0x22, 0xff]),
            "setvar Var_1 -guid 4a1b8e36-0bd3-4c35-9b5a-0f7e2f3c6d01 -nv -bs -rt =H0022ff"
        );
        assert_eq!(
            setvar_command("v", GUID, ATTR_BS, b"A"),
            "setvar v -guid 4a1b8e36-0bd3-4c35-9b5a-0f7e2f3c6d01 -bs =H41"
        );
    }

    #[test]
    #[should_panic(expected = "cannot be set")]
    fn rejects_authenticated_attributes() {
        setvar_command("v", GUID, ATTR_NV | ATTR_BS | crate::ATTR_AT, b"x");
    }

    #[test]
    #[should_panic(expected = "delete")]
    fn rejects_empty_data() {
        setvar_command("v", GUID, ATTR_BS, b"");
    }

    #[test]
    #[should_panic(expected = "not safe")]
    fn rejects_shell_metacharacters_in_names() {
        setvar_command("a\"b", GUID, ATTR_BS, b"x");
    }

    #[test]
    #[should_panic(expected = "not a GUID")]
    fn rejects_malformed_guids() {
        setvar_command("v", "4a1b8e36-0bd3-4c35-9b5a", ATTR_BS, b"x");
    }
}
