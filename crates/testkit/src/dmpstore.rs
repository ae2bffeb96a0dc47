//! Parsing the UEFI shell's `dmpstore` output.

use crate::setvar::is_guid;
use crate::{ATTR_AT, ATTR_AW, ATTR_BS, ATTR_HR, ATTR_NV, ATTR_RT};

/// One variable as listed by the UEFI shell's `dmpstore`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpedVariable {
    /// Variable name, e.g. `Boot0000`.
    pub name: String,
    /// Vendor GUID, lower-case canonical (`8be4df61-93ca-11d2-aa0d-00e098032b8c`).
    pub guid: String,
    /// `EFI_VARIABLE_*` attribute bits (see the `ATTR_*` constants).
    pub attributes: u32,
    /// The variable's data.
    pub data: Vec<u8>,
}

/// Parses what `dmpstore -all >a FILE` or `dmpstore -all -sfo >a FILE` wrote.
///
/// Write the file with `>a` (ASCII); plain `>` writes UCS-2, which must be
/// decoded first. Both output formats are accepted, told apart by the first
/// line:
///
/// * **`-sfo`** (standard-format output; preferred, because it is exact): a
///   `ShellCommand,"dmpstore"` line, then one line per variable:
///   `VariableInfo,"Boot0000","8BE4DF61-93CA-11D2-AA0D-00E098032B8C","0x7","0x3E","0100…"`
///   (name, GUID, attributes as a number, data size, data as hex).
/// * **default**: per variable a header line
///   `Variable NV+RT+BS '8BE4DF61-93CA-11D2-AA0D-00E098032B8C:Boot0000' DataSize = 0x3E`
///   followed by hex-dump lines
///   `  00000000: 01 00 00 00 2C 00 45 00-46 00 49 00 20 00 49 00  *....,.E.F.I. .I.*`.
///   Attributes are spelled `NV`, `BS`, `RT+BS`, `HR`, `AW`, `AT` joined by
///   `+` in that order (`Invalid` for none). This format is *lossy*: RT is
///   always printed as `RT+BS` (so RT without BS reads as 0x6), and GUIDs
///   the shell knows are printed as names (`EFIGlobalVariable`,
///   `iSCSIInitiatorName`, …). Only the names OVMF's default store shows are
///   mapped back; any other name is an error (use `-sfo` then).
///
/// The parser is strict so that a test cannot pass on a garbled dump: every
/// non-empty line must be understood, hex-dump offsets must be contiguous,
/// the data length must equal the stated size, and the ASCII column must
/// agree with the bytes. Lines end in `\r\n` or `\n`.
pub fn parse_dmpstore(text: &str) -> Result<Vec<DumpedVariable>, String> {
    let mut lines = text
        .lines()
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.is_empty())
        .peekable();
    match lines.peek() {
        None => Err("dmpstore output is empty".into()),
        Some((_, first)) if first.starts_with("ShellCommand,") => {
            if *first != r#"ShellCommand,"dmpstore""# {
                return Err(format!("line 1: not dmpstore -sfo output: {first:?}"));
            }
            lines
                .skip(1)
                .map(|(n, l)| parse_sfo_line(l).map_err(|e| format!("line {n}: {e}: {l:?}")))
                .collect()
        }
        Some(_) => parse_default(lines),
    }
}

/// Parses one `VariableInfo,"name","GUID","0xATTR","0xSIZE","HEX"` line.
fn parse_sfo_line(line: &str) -> Result<DumpedVariable, String> {
    let body = line
        .strip_prefix("VariableInfo,\"")
        .and_then(|b| b.strip_suffix('"'))
        .ok_or("expected VariableInfo,\"…\"")?;
    // Split from the right: the last four fields cannot contain `","`, but a
    // variable name could.
    let fields: Vec<&str> = body.rsplitn(5, "\",\"").collect();
    let [hex, size, attrs, guid, name] = fields[..] else {
        return Err("expected 5 quoted fields".into());
    };
    let data = decode_hex(hex).ok_or("data is not an even number of hex digits")?;
    let size = parse_hex_u32(size).ok_or("bad data size")?;
    if data.len() != size as usize {
        return Err(format!("data has {} bytes, size says {size}", data.len()));
    }
    Ok(DumpedVariable {
        name: name.to_owned(),
        guid: canonical_guid(guid)?,
        attributes: parse_hex_u32(attrs).ok_or("bad attributes")?,
        data,
    })
}

/// Parses the default (human-readable) format: header lines, each followed by
/// hex-dump lines.
fn parse_default<'a>(
    lines: impl Iterator<Item = (usize, &'a str)>,
) -> Result<Vec<DumpedVariable>, String> {
    let mut vars = Vec::new();
    // The variable being read and the size its header announced.
    let mut current: Option<(DumpedVariable, usize)> = None;
    for (n, line) in lines {
        let err = |e: String| format!("line {n}: {e}: {line:?}");
        if let Some(rest) = line.strip_prefix("Variable ") {
            if let Some(done) = current.take() {
                vars.push(finish(done).map_err(err)?);
            }
            current = Some(parse_header(rest).map_err(err)?);
        } else if let Some((var, size)) = current.as_mut() {
            parse_hex_line(line, &mut var.data, *size).map_err(err)?;
        } else {
            return Err(err("expected a `Variable …` header".into()));
        }
    }
    if let Some(done) = current.take() {
        vars.push(finish(done).map_err(|e| format!("last variable: {e}"))?);
    }
    Ok(vars)
}

/// Checks that a variable got all the bytes its header announced.
fn finish((var, size): (DumpedVariable, usize)) -> Result<DumpedVariable, String> {
    if var.data.len() == size {
        Ok(var)
    } else {
        Err(format!(
            "variable {} has {} data bytes, DataSize says {size}",
            var.name,
            var.data.len()
        ))
    }
}

/// Parses `NV+RT+BS 'GUID-or-name:Name' DataSize = 0x3E` (after `Variable `).
fn parse_header(rest: &str) -> Result<(DumpedVariable, usize), String> {
    let (attrs, rest) = rest.split_once(' ').ok_or("missing attributes")?;
    let (quoted, size) = rest
        .rsplit_once("' DataSize = ")
        .ok_or("missing ' DataSize = ")?;
    let size = parse_hex_u32(size).ok_or("bad DataSize")? as usize;
    let (guid, name) = quoted
        .strip_prefix('\'')
        .and_then(|q| q.split_once(':'))
        .ok_or("expected 'GUID:Name'")?;
    let var = DumpedVariable {
        name: name.to_owned(),
        guid: guid_from_display(guid)?,
        attributes: parse_attributes(attrs)?,
        data: Vec::with_capacity(size),
    };
    Ok((var, size))
}

/// Parses `NV+RT+BS`-style attribute spellings (see edk2 `GetAttrType`).
fn parse_attributes(text: &str) -> Result<u32, String> {
    if text == "Invalid" {
        return Ok(0);
    }
    let mut attrs = 0;
    let mut parts = text.split('+').peekable();
    while let Some(part) = parts.next() {
        attrs |= match part {
            "NV" => ATTR_NV,
            // RT is always printed together with BS, as `RT+BS`.
            "RT" if parts.next_if_eq(&"BS").is_some() => ATTR_RT | ATTR_BS,
            "BS" => ATTR_BS,
            "HR" => ATTR_HR,
            "AW" => ATTR_AW,
            "AT" => ATTR_AT,
            _ => return Err(format!("unknown attribute {part:?}")),
        };
    }
    Ok(attrs)
}

/// Turns the GUID column of the default format back into a GUID.
fn guid_from_display(text: &str) -> Result<String, String> {
    // The shell prints GUIDs it has a name for as that name. These are the
    // names seen in dumps of Debian's OVMF_VARS_4M.fd, checked against the
    // `-sfo` output of the same boot.
    const NAMES: [(&str, &str); 2] = [
        ("EFIGlobalVariable", "8be4df61-93ca-11d2-aa0d-00e098032b8c"),
        ("iSCSIInitiatorName", "59324945-ec44-4c0d-b1cd-9db139df070c"),
    ];
    match NAMES.iter().find(|(name, _)| *name == text) {
        Some((_, guid)) => Ok((*guid).to_owned()),
        None if is_guid(text) => canonical_guid(text),
        None => Err(format!(
            "GUID name {text:?} is not known to testkit; dump with `dmpstore -all -sfo` instead"
        )),
    }
}

fn canonical_guid(text: &str) -> Result<String, String> {
    if is_guid(text) {
        Ok(text.to_ascii_lowercase())
    } else {
        Err(format!("{text:?} is not a GUID"))
    }
}

/// Parses one hex-dump line, `  OOOOOOOO: HH HH …-HH …  *ascii*`, and appends
/// its bytes to `data` (which already holds everything before it).
fn parse_hex_line(line: &str, data: &mut Vec<u8>, size: usize) -> Result<(), String> {
    let (offset, rest) = line
        .strip_prefix("  ")
        .and_then(|l| l.split_once(": "))
        .ok_or("expected a hex-dump line")?;
    if offset.len() != 8 || parse_hex_u32(&format!("0x{offset}")) != Some(data.len() as u32) {
        return Err(format!("expected offset {:08X}", data.len()));
    }
    // The hex column never contains '*', so the first one opens the ASCII
    // column (which may itself contain '*').
    let (hex, ascii) = rest.split_once('*').ok_or("missing ASCII column")?;
    let ascii = ascii.strip_suffix('*').ok_or("unterminated ASCII column")?;
    let start = data.len();
    for token in hex.split([' ', '-']).filter(|t| !t.is_empty()) {
        let byte = decode_hex(token)
            .filter(|b| b.len() == 1)
            .ok_or_else(|| format!("bad byte {token:?}"))?;
        data.extend(byte);
    }
    let bytes = &data[start..];
    if bytes.is_empty() || bytes.len() > 16 || data.len() > size {
        return Err("wrong number of bytes".into());
    }
    if bytes.len() < 16 && data.len() != size {
        return Err("short line before the end of the data".into());
    }
    // DumpHex shows bytes 0x20..=0x7e as themselves, everything else as '.'.
    let expected: String = bytes
        .iter()
        .map(|&b| {
            if (0x20..=0x7e).contains(&b) {
                b as char
            } else {
                '.'
            }
        })
        .collect();
    if ascii != expected {
        return Err("ASCII column does not match the bytes".into());
    }
    Ok(())
}

fn parse_hex_u32(text: &str) -> Option<u32> {
    let digits = text.strip_prefix("0x")?;
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(digits, 16).ok()
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 || !text.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Excerpts of real output from Debian's OVMF 2022.11 (`>a`, CRLF).
    const DEFAULT_LINES: [&str; 13] = [
        "Variable NV+RT+BS '4A1B8E36-0BD3-4C35-9B5A-0F7E2F3C6D01:NvramTest' DataSize = 0x04",
        "  00000000: FF 02 01 00                                      *....*",
        "Variable NV+RT+BS 'EFIGlobalVariable:Boot0002' DataSize = 0x58",
        "  00000000: 01 00 00 00 2C 00 45 00-46 00 49 00 20 00 49 00  *....,.E.F.I. .I.*",
        "  00000010: 6E 00 74 00 65 00 72 00-6E 00 61 00 6C 00 20 00  *n.t.e.r.n.a.l. .*",
        "  00000020: 53 00 68 00 65 00 6C 00-6C 00 00 00 04 07 14 00  *S.h.e.l.l.......*",
        "  00000030: C9 BD B8 7C EB F8 34 4F-AA EA 3E E4 AF 65 16 A1  *...|..4O..>..e..*",
        "  00000040: 04 06 14 00 83 A5 04 7C-3E 9E 1C 4F AD 65 E0 52  *.......|>..O.e.R*",
        "  00000050: 68 D0 B4 D1 7F FF 04 00-                         *h.......*",
        "Variable NV+BS 'iSCSIInitiatorName:Attempt 8' DataSize = 0x02",
        "  00000000: 2A 00                                            **.*",
        "Variable RT+BS+AT 'D9BEE56E-75DC-49D9-B4D7-B534210F637A:certdb' DataSize = 0x01",
        "  00000000: 01                                               *.*",
    ];

    const SFO_LINES: [&str; 3] = [
        r#"ShellCommand,"dmpstore""#,
        r#"VariableInfo,"BootOrder","8BE4DF61-93CA-11D2-AA0D-00E098032B8C","0x7","0x6","000001000200""#,
        r#"VariableInfo,"Attempt 1","59324945-EC44-4C0D-B1CD-9DB139DF070C","0x3","0x1","00""#,
    ];

    fn crlf(lines: &[&str]) -> String {
        lines.iter().map(|l| format!("{l}\r\n")).collect()
    }

    #[test]
    fn parses_default_format() {
        let vars = parse_dmpstore(&crlf(&DEFAULT_LINES)).unwrap();
        assert_eq!(vars.len(), 4);
        assert_eq!(vars[0].name, "NvramTest");
        assert_eq!(vars[0].guid, "4a1b8e36-0bd3-4c35-9b5a-0f7e2f3c6d01");
        assert_eq!(vars[0].attributes, 0x7);
        assert_eq!(vars[0].data, [0xff, 2, 1, 0]);
        assert_eq!(vars[1].name, "Boot0002");
        assert_eq!(vars[1].guid, "8be4df61-93ca-11d2-aa0d-00e098032b8c");
        assert_eq!(vars[1].data.len(), 0x58);
        assert_eq!(
            vars[1].data[0x50..],
            [0x68, 0xd0, 0xb4, 0xd1, 0x7f, 0xff, 4, 0]
        );
        assert_eq!(vars[2].name, "Attempt 8");
        assert_eq!(vars[2].guid, "59324945-ec44-4c0d-b1cd-9db139df070c");
        assert_eq!(vars[2].data, b"*\0");
        assert_eq!(vars[3].attributes, ATTR_RT | ATTR_BS | ATTR_AT);
    }

    #[test]
    fn parses_sfo_format() {
        let vars = parse_dmpstore(&crlf(&SFO_LINES)).unwrap();
        assert_eq!(vars.len(), 2);
        assert_eq!(vars[0].name, "BootOrder");
        assert_eq!(vars[0].guid, "8be4df61-93ca-11d2-aa0d-00e098032b8c");
        assert_eq!(vars[0].attributes, 7);
        assert_eq!(vars[0].data, [0, 0, 1, 0, 2, 0]);
        assert_eq!(vars[1].name, "Attempt 1");
        assert_eq!(vars[1].attributes, 3);
    }

    #[test]
    fn rejects_damaged_dumps() {
        let (default, sfo) = (crlf(&DEFAULT_LINES), crlf(&SFO_LINES));
        let bad = [
            // Truncated: DataSize says 0x58.
            default.split("  00000050").next().unwrap().to_owned(),
            // A line it does not understand inside a block.
            default.replace("  00000010:", "  garbage"),
            // Wrong offset.
            default.replace("  00000020:", "  00000030:"),
            // Byte changed but not its ASCII column.
            default.replace("2C 00 45 00", "2C 00 46 00"),
            // Unknown attribute and unknown GUID name.
            default.replace("NV+BS 'iSCSI", "NV+XX 'iSCSI"),
            default.replace("EFIGlobalVariable", "SomethingElse"),
            // Text before the first header.
            format!("dmpstore: oops\r\n{default}"),
            // sfo size mismatch and a foreign line.
            sfo.replace("\"0x6\"", "\"0x7\""),
            format!("{sfo}Shell> \r\n"),
            String::new(),
        ];
        for text in bad {
            assert!(parse_dmpstore(&text).is_err(), "accepted:\n{text}");
        }
    }

    #[test]
    fn spells_attributes_like_the_shell() {
        assert_eq!(parse_attributes("NV+BS"), Ok(3));
        assert_eq!(parse_attributes("RT+BS"), Ok(6));
        assert_eq!(parse_attributes("NV+RT+BS+HR+AW+AT"), Ok(0x3f));
        assert_eq!(parse_attributes("Invalid"), Ok(0));
        assert!(parse_attributes("RT").is_err());
        assert!(parse_attributes("").is_err());
    }
}
