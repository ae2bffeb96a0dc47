//! A fleet edit over libvirt domains: which domains' stores may be edited (a running domain's
//! never is), and [`apply_all`](crate::apply::apply_all) over those.

use super::{Domain, LibvirtError, Selection};
use crate::apply::{apply_all, FileResult, Plan, Status};
use std::path::PathBuf;

/// One domain's store to edit, or the reason it is not edited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The domain's name.
    pub domain: String,
    /// Its store (empty for a domain without one).
    pub file: PathBuf,
    /// Decided without touching the file: running ([`Status::Skipped`]), no store yet
    /// (skipped), no UEFI varstore at all ([`Status::Failed`]).
    pub verdict: Option<(Status, String)>,
}

/// The [`Target`]s of a selection of domains.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Targets {
    /// One per domain selected, in the order of the domains; a domain without a UEFI
    /// varstore is one only when it was named.
    pub targets: Vec<Target>,
    /// Domains without a UEFI varstore left out of [`Selection::All`].
    pub without_store: usize,
}

/// The targets of the domains `selection` picks from `domains` ([`super::list_domains`]):
/// an active domain's store is skipped, never edited (its QEMU holds it and would overwrite
/// it); so is one that libvirt has not created yet (it copies the template at the next
/// start). A named domain without a UEFI varstore fails; with [`Selection::All`] such
/// domains are only counted.
pub fn targets(domains: &[Domain], selection: &Selection) -> Result<Targets, LibvirtError> {
    let mut out = Targets::default();
    for d in super::select(domains, selection)? {
        let Some(n) = &d.nvram else {
            if *selection == Selection::All {
                out.without_store += 1;
            } else {
                out.targets.push(Target {
                    domain: d.name.clone(),
                    file: PathBuf::new(),
                    verdict: Some((Status::Failed, "the domain has no UEFI varstore".into())),
                });
            }
            continue;
        };
        let verdict = if d.active {
            Some((
                Status::Skipped,
                format!("the domain is {}: not edited", d.state),
            ))
        } else if n.implicit && std::fs::symlink_metadata(&n.path).is_err() {
            Some((
                Status::Skipped,
                "no store yet: libvirt creates it from the template at the next start".into(),
            ))
        } else {
            None
        };
        out.targets.push(Target {
            domain: d.name.clone(),
            file: n.path.clone(),
            verdict,
        });
    }
    Ok(out)
}

/// Applies `plan` to the targets' stores that may be edited, `jobs` at a time; the others get
/// their verdict. Returns each domain's name with its result, in the order of `targets`.
/// `on_done` is called as each finishes (for a progress display).
pub fn apply_targets(
    targets: &[Target],
    plan: &Plan,
    jobs: usize,
    on_done: &(dyn Fn(&FileResult) + Sync),
) -> Vec<(String, FileResult)> {
    let files: Vec<PathBuf> = targets
        .iter()
        .filter(|t| t.verdict.is_none())
        .map(|t| t.file.clone())
        .collect();
    let mut edited = apply_all(&files, plan, jobs, on_done).into_iter();
    targets
        .iter()
        .map(|t| {
            let result = match &t.verdict {
                Some((status, detail)) => {
                    let r = FileResult {
                        file: t.file.clone(),
                        status: *status,
                        detail: detail.clone(),
                        error: None,
                    };
                    on_done(&r);
                    r
                }
                None => edited.next().expect("one result per file"),
            };
            (t.domain.clone(), result)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::Format;

    fn domain(name: &str, active: bool, store: Option<(&std::path::Path, bool)>) -> Domain {
        Domain {
            name: name.into(),
            uuid: String::new(),
            state: if active { "running" } else { "shut off" }.into(),
            active,
            kind: "kvm".into(),
            firmware: None,
            arch: None,
            machine: None,
            loader: None,
            nvram: store.map(|(path, implicit)| super::super::Nvram {
                path: path.to_path_buf(),
                format: Format::Raw,
                format_declared: false,
                template: None,
                template_format: None,
                implicit,
            }),
        }
    }

    /// A running domain and one whose implicit store libvirt has not created yet are
    /// skipped; a stopped domain's store is edited; a domain without a varstore is counted
    /// with `All` and fails when named.
    #[test]
    fn running_and_uncreated_stores_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let present = dir.path().join("present.fd");
        std::fs::write(&present, b"").unwrap();
        let absent = dir.path().join("absent.fd");
        let domains = [
            domain("running", true, Some((&present, false))),
            domain("stopped", false, Some((&present, false))),
            domain("new", false, Some((&absent, true))),
            domain("bios", false, None),
        ];
        let all = targets(&domains, &Selection::All).unwrap();
        assert_eq!(all.without_store, 1);
        let verdicts: Vec<_> = all
            .targets
            .iter()
            .map(|t| (t.domain.as_str(), t.verdict.as_ref().map(|v| v.0)))
            .collect();
        assert_eq!(
            verdicts,
            [
                ("running", Some(Status::Skipped)),
                ("stopped", None),
                ("new", Some(Status::Skipped)),
            ]
        );
        let named = targets(&domains, &Selection::Names(vec!["bios".into()])).unwrap();
        assert_eq!(named.targets[0].verdict.as_ref().unwrap().0, Status::Failed);
    }
}
