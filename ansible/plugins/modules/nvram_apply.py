#!/usr/bin/python
# -*- coding: utf-8 -*-
# nvram_apply: runs `nvram apply` on the managed host (see ../../README.md).
# Python standard library only: it runs on the managed host (Debian 12: Python 3.11).

from __future__ import annotations

DOCUMENTATION = r"""
---
module: nvram_apply
short_description: Apply one edit to the UEFI variable stores of a host's VMs with C(nvram apply)
version_added: "0.1.0"
description:
  - Runs the C(nvram) command installed on the managed host as
    C(nvram apply --json EDIT... FILES...), making the same edit on every store given by
    O(files), O(files_from) and O(dir), each store locked, edited on a copy and replaced atomically
    on its own.
  - The options are the long options of C(nvram apply), in snake case
    (C(--add-microsoft-dbx) is O(add_microsoft_dbx)); options that C(nvram apply) repeats
    are lists. C(--json) is always given, C(--dry-run) in check mode.
  - The task is changed only when a store changed (in check mode, when a store would
    change). A store that is already as asked is C(unchanged) and not written.
  - A store locked by a running VM or another tool is C(skipped), not touched, reported in
    RV(stores) and RV(locked) and as a warning; it fails the task only with O(strict) (alias
    O(fail_on_locked)). Run the task again when the VM is stopped.
  - The task fails when a store failed (not a store, unreadable, the edit refused); the other
    stores are still edited, and every result is in RV(stores).
  - With C(--diff), the live variables of each store that changes (C(nvram list)), before
    and after. In check mode the stores that would change are copied to a temporary
    directory and edited there to show the result; the stores themselves are not written.
  - Needs C(nvram) 0.1.0 or later on the managed host (the first with C(apply --json) and
    C(--dry-run)); the task fails, saying so, when it is missing or older.
author:
  - nvram developers
options:
  files:
    description:
      - Stores to edit (raw flash images, qcow2 images, QEMU uefi-vars JSON), as the FILE
        arguments of C(nvram apply). Absolute paths.
    type: list
    elements: path
  dir:
    description:
      - Edit every C(*.fd), C(*.qcow2) and C(*.json) file in these directories (not
        recursive), as C(--dir). libvirt keeps its stores in C(/var/lib/libvirt/qemu/nvram).
    type: list
    elements: path
  libvirt:
    description:
      - Edit the stores of libvirt domains (O(domain) or O(all)) instead of files, as
        C(--libvirt); a running domain's store is skipped, as is one libvirt has not created
        yet. Give no O(files), O(dir) or O(files_from) with it. Needs an nvram with
        C(apply --libvirt).
    type: bool
    default: false
  connect:
    description:
      - With O(libvirt), the libvirt connection URI (C(--connect)); C(nvram) defaults to
        C($LIBVIRT_DEFAULT_URI), else C(qemu:///system).
    type: str
  domain:
    description:
      - With O(libvirt), domains by name (C(--domain)).
    type: list
    elements: str
  all:
    description:
      - With O(libvirt), every domain that has a UEFI varstore (C(--all)).
    type: bool
    default: false
  files_from:
    description:
      - Files listing stores, one per line, as C(--files-from). Standard input (C(-)) is not
        available to a module.
    type: list
    elements: path
  set:
    description:
      - Create or replace variables, C(NAME[@GUID][:ATTRS]=KIND:VALUE), as C(--set); e.g.
        C(Timeout=u16:5). KIND is one of hex, file, string, ascii, u8, u16, u32.
    type: list
    elements: str
  delete:
    description:
      - Delete variables, C(NAME[@GUID]), as C(--delete); a variable that is not there
        counts as done.
    type: list
    elements: str
  import:
    description:
      - Import JSON variable lists (QEMU uefi-vars, virt-fw-vars, python-uefivars) as
        C(--import).
    type: list
    elements: path
  replace_all:
    description:
      - With O(import), also delete the live variables the lists do not name
        (C(--replace-all)).
    type: bool
    default: false
  strategy:
    description:
      - How changes are written (C(--strategy)); C(nvram apply) defaults to C(append).
    type: str
    choices: [append, compact]
  jobs:
    description:
      - Stores edited at the same time (C(--jobs)); C(nvram apply) defaults to the number of
        CPUs.
    type: int
  strict:
    description:
      - Fail the task when a store is locked (C(--strict)). Without it, locked stores are
        reported and the task succeeds.
    type: bool
    default: false
    aliases: [fail_on_locked]
  upgrade_template:
    description:
      - Give each store this template's Secure Boot databases, keeping its own variables
        (C(--upgrade-template)).
    type: path
  replace_pk:
    description:
      - With O(upgrade_template), take the template's PK where a store's differs or is
        missing (C(--replace-pk)).
    type: bool
    default: false
  enroll_pk:
    description:
      - Enrol Secure Boot keys with this platform key certificate (C(--enroll-pk)).
    type: path
  enroll_kek:
    description:
      - With O(enroll_pk), KEK certificates or lists (C(--enroll-kek)).
    type: list
    elements: path
  enroll_db:
    description:
      - With O(enroll_pk), db certificates or lists (C(--enroll-db)).
    type: list
    elements: path
  enroll_dbx:
    description:
      - With O(enroll_pk), dbx as a signature list or C(.auth) file (C(--enroll-dbx)).
    type: path
  enroll_microsoft:
    description:
      - With O(enroll_pk), also enrol Microsoft's KEK and db certificates
        (C(--enroll-microsoft)).
    type: str
    choices: ["2011", "2023", "all"]
  enroll_distro:
    description:
      - With O(enroll_pk), also enrol distributions' db certificates (C(--enroll-distro)).
    type: list
    elements: str
    choices: [debian, redhat, ubuntu]
  enroll_owner:
    description:
      - With O(enroll_pk), owner GUID of the certificates given (C(--enroll-owner)).
    type: str
  add_kek:
    description:
      - Add KEK certificates or lists, keeping the entries there (C(--add-kek)).
    type: list
    elements: path
  add_db:
    description:
      - Add db certificates or lists, keeping the entries there (C(--add-db)).
    type: list
    elements: path
  add_dbx:
    description:
      - Add dbx entries from signature lists or C(.auth) files (C(--add-dbx)).
    type: list
    elements: path
  add_microsoft:
    description:
      - Add Microsoft's missing KEK and db certificates (C(--add-microsoft)); the 2023
        rollout is C(2023).
    type: str
    choices: ["2011", "2023", "all"]
  add_microsoft_dbx:
    description:
      - Add Microsoft's dbx updates signed with the 2011 KEK, the 2023 KEK or both, for each
        store's architecture (C(--add-microsoft-dbx)).
    type: str
    choices: ["2011", "2023", "all"]
  add_distro:
    description:
      - Add distributions' CA certificates to db (C(--add-distro)).
    type: list
    elements: str
    choices: [debian, redhat, ubuntu]
  add_mok:
    description:
      - Add certificates to shim's MokList, keeping the entries there (C(--add-mok)).
    type: list
    elements: path
  add_db_hash:
    description:
      - Add bare SHA-256 hashes (64 hex digits) to db (C(--add-db-hash)).
    type: list
    elements: str
  add_dbx_hash:
    description:
      - Add bare SHA-256 hashes to dbx, revoking those images (C(--add-dbx-hash)).
    type: list
    elements: str
  add_mok_hash:
    description:
      - Add bare SHA-256 hashes to shim's MokList (C(--add-mok-hash)).
    type: list
    elements: str
  add_owner:
    description:
      - Owner GUID of the certificates and hashes given with O(add_kek), O(add_db),
        O(add_dbx), O(add_mok) and the O(add_db_hash)-style options (C(--add-owner)).
    type: str
  shim_on:
    description:
      - Turn shim's or fallback's switches on (C(--shim-on)).
    type: list
    elements: str
    choices: [debug, verbose, fallback-verbose, fallback-no-reboot]
  shim_off:
    description:
      - Turn shim's or fallback's switches off; the variable is deleted (C(--shim-off)).
    type: list
    elements: str
    choices: [debug, verbose, fallback-verbose, fallback-no-reboot]
  shim_sbat_level:
    description:
      - Set shim's SbatLevel to the content of this file (C(--shim-sbat-level)).
    type: path
  wait:
    description:
      - Wait for the lock of a store that another process holds instead of skipping it
        (C(--wait)), C(forever) or a number of seconds (C(--wait=SECONDS)).
    type: raw
  format:
    description:
      - How the stores are kept (C(--format)); without it each store's format is recognised
        by its content.
    type: str
    choices: [raw, qcow2, json, aws]
  executable:
    description:
      - The C(nvram) command on the managed host, a name looked up on C(PATH) or a path.
    type: path
    default: nvram
notes:
  - Supports check mode (C(--dry-run)) and diff mode.
  - Give absolute paths; relative ones are resolved in the module's working directory.
requirements:
  - nvram 0.1.0 or later on the managed host
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
"""

EXAMPLES = r"""
- name: Microsoft 2023 Secure Boot certificates and dbx update on every VM's store
  nvram.fleet.nvram_apply:
    dir: /var/lib/libvirt/qemu/nvram
    add_microsoft: "2023"
    add_microsoft_dbx: "2023"
  register: rollout

- name: Stores of running VMs (locked), to do again once they are stopped
  ansible.builtin.debug:
    var: rollout.locked
  when: rollout.locked | length > 0

- name: Boot menu timeout of 5 s on two stores, failing if one is in use
  nvram.fleet.nvram_apply:
    files:
      - /var/lib/libvirt/qemu/nvram/web1_VARS.fd
      - /var/lib/libvirt/qemu/nvram/web2_VARS.fd
    set:
      - Timeout=u16:5
    fail_on_locked: true

- name: Newer template's Secure Boot databases, nvram installed outside PATH
  nvram.fleet.nvram_apply:
    dir: /var/lib/libvirt/qemu/nvram
    upgrade_template: /usr/share/OVMF/OVMF_VARS_4M.ms.fd
    executable: /opt/nvram/bin/nvram
"""

RETURN = r"""
stores:
  description:
    - One entry per store, in the order C(nvram apply) reports them.
  returned: when nvram apply ran
  type: list
  elements: dict
  contains:
    file:
      description: The store's path.
      type: str
      sample: /var/lib/libvirt/qemu/nvram/web1_VARS.fd
    domain:
      description: With O(libvirt), the domain whose store it is.
      type: str
      returned: with O(libvirt)
      sample: web1
    result:
      description:
        - C(changed), C(unchanged) (already as asked, not written), C(skipped) (locked, not
          touched), C(changed-not-durable) (changed, but the fsync of the directory after
          the rename failed), C(failed) (not touched); in check mode C(would-change)
          instead of C(changed).
      type: str
      sample: changed
    detail:
      description: What each step did, or why the store was skipped or failed.
      type: str
      sample: "KEK: added (+1); db: added (+3); dbx: added (+291)"
    changed:
      description: Whether this store changed (in check mode, would change).
      type: bool
  sample:
    - file: /var/lib/libvirt/qemu/nvram/web1_VARS.fd
      result: changed
      detail: "KEK: added (+1); db: added (+3); dbx: added (+291)"
      changed: true
summary:
  description: How many stores had each result.
  returned: when nvram apply ran
  type: dict
  sample: {"changed": 2, "unchanged": 5, "skipped": 1, "failed": 0,
           "changed_not_durable": 0, "would_change": 0, "total": 8}
locked:
  description: The stores that were skipped because another process holds their lock.
  returned: when nvram apply ran
  type: list
  elements: str
  sample: [/var/lib/libvirt/qemu/nvram/db1_VARS.fd]
failed_stores:
  description: The stores that failed.
  returned: when nvram apply ran
  type: list
  elements: str
  sample: []
cmd:
  description: The command line that edited the stores (with C(--dry-run) in check mode).
  returned: when nvram apply ran
  type: list
  elements: str
  sample: [/usr/bin/nvram, apply, --json, --add-microsoft, "2023", --dir, /var/lib/libvirt/qemu/nvram]
nvram_version:
  description: The version of C(nvram) on the managed host.
  returned: when nvram was found
  type: str
  sample: 0.1.0
rc:
  description: The exit status of C(nvram apply).
  returned: when nvram apply ran
  type: int
  sample: 0
msg:
  description: C(nvram apply)'s summary, or why the task failed.
  returned: always
  type: str
  sample: "nvram: 8 files: 2 changed, 5 unchanged, 1 skipped (locked), 0 failed"
"""

import json
import os
import re
import shutil
import tempfile

from ansible.module_utils.basic import AnsibleModule

# The first nvram with `apply --json` and `apply --dry-run`.
MIN_VERSION = (0, 1, 0)

CHOICES_YEAR = ["2011", "2023", "all"]
CHOICES_DISTRO = ["debian", "redhat", "ubuntu"]
CHOICES_SHIM = ["debug", "verbose", "fallback-verbose", "fallback-no-reboot"]

# Option name -> spec; every option but `executable` is `nvram apply`'s long option of the
# same name in kebab case. Options repeated on nvram's command line are lists.
ARGUMENT_SPEC = {
    "files": dict(type="list", elements="path"),
    "dir": dict(type="list", elements="path"),
    "libvirt": dict(type="bool", default=False),
    "connect": dict(type="str"),
    "domain": dict(type="list", elements="str"),
    "all": dict(type="bool", default=False),
    "files_from": dict(type="list", elements="path"),
    "set": dict(type="list", elements="str"),
    "delete": dict(type="list", elements="str"),
    "import": dict(type="list", elements="path"),
    "replace_all": dict(type="bool", default=False),
    "strategy": dict(type="str", choices=["append", "compact"]),
    "jobs": dict(type="int"),
    "strict": dict(type="bool", default=False, aliases=["fail_on_locked"]),
    "upgrade_template": dict(type="path"),
    "replace_pk": dict(type="bool", default=False),
    "enroll_pk": dict(type="path"),
    "enroll_kek": dict(type="list", elements="path"),
    "enroll_db": dict(type="list", elements="path"),
    "enroll_dbx": dict(type="path"),
    "enroll_microsoft": dict(type="str", choices=CHOICES_YEAR),
    "enroll_distro": dict(type="list", elements="str", choices=CHOICES_DISTRO),
    "enroll_owner": dict(type="str"),
    "add_kek": dict(type="list", elements="path"),
    "add_db": dict(type="list", elements="path"),
    "add_dbx": dict(type="list", elements="path"),
    "add_microsoft": dict(type="str", choices=CHOICES_YEAR),
    "add_microsoft_dbx": dict(type="str", choices=CHOICES_YEAR),
    "add_distro": dict(type="list", elements="str", choices=CHOICES_DISTRO),
    "add_mok": dict(type="list", elements="path"),
    "add_db_hash": dict(type="list", elements="str"),
    "add_dbx_hash": dict(type="list", elements="str"),
    "add_mok_hash": dict(type="list", elements="str"),
    "add_owner": dict(type="str"),
    "shim_on": dict(type="list", elements="str", choices=CHOICES_SHIM),
    "shim_off": dict(type="list", elements="str", choices=CHOICES_SHIM),
    "shim_sbat_level": dict(type="path"),
    "wait": dict(type="raw"),
    "format": dict(type="str", choices=["raw", "qcow2", "json", "aws"]),
    "executable": dict(type="path", default="nvram"),
}

# The options that select stores; every other apply option is part of the edit.
SELECTION = ("files", "files_from", "dir")
LIBVIRT = ("libvirt", "connect", "domain", "all")
# Options that are not nvram's, or that the module builds itself.
NOT_APPLY = ("executable", "files", "wait", "format")
# At least one of these makes an edit (nvram apply's "edits" group).
EDITS = ("set", "delete", "import", "upgrade_template", "enroll_pk", "add_kek", "add_db",
         "add_dbx", "add_microsoft", "add_microsoft_dbx", "add_distro", "add_mok", "add_db_hash",
         "add_dbx_hash", "add_mok_hash", "shim_on", "shim_off", "shim_sbat_level")

CHANGED = ("changed", "changed-not-durable", "would-change")


def flag(name):
    return "--" + name.replace("_", "-")


def edit_args(params):
    """The command line's edit options (everything but the stores), in ARGUMENT_SPEC order."""
    args = []
    for name, spec in ARGUMENT_SPEC.items():
        if name in SELECTION or name in LIBVIRT or name in NOT_APPLY:
            continue
        value = params.get(name)
        if value is None or value is False or value == []:
            continue
        if spec["type"] == "bool":
            args.append(flag(name))
        elif spec["type"] == "list":
            for item in value:
                args += [flag(name), str(item)]
        else:
            args += [flag(name), str(value)]
    wait = params.get("wait")
    if wait is not None:
        args.append("--wait" if wait == "forever" else "--wait=" + wait)
    if params.get("format") is not None:
        args += ["--format", params["format"]]
    return args


def selection_args(params):
    args = []
    if params.get("libvirt"):
        args.append("--libvirt")
    if params.get("connect") is not None:
        args += ["--connect", params["connect"]]
    for name in params.get("domain") or []:
        args += ["--domain", name]
    if params.get("all"):
        args.append("--all")
    for name in ("files_from", "dir"):
        for item in params.get(name) or []:
            args += [flag(name), item]
    files = params.get("files") or []
    if files:
        # A store named like an option stays a store.
        args.append("--")
        args += files
    return args


def parse_version(text):
    match = re.match(r"^nvram (\d+)\.(\d+)\.(\d+)", text.strip())
    if not match:
        return None
    return tuple(int(part) for part in match.groups())


def find_nvram(module):
    executable = module.params["executable"]
    if "/" in executable:
        if not (os.path.isfile(executable) and os.access(executable, os.X_OK)):
            module.fail_json(msg="nvram_apply: %s is not an executable file: install nvram %s or "
                                 "later on this host, or give its path with the executable "
                                 "option" % (executable, ".".join(map(str, MIN_VERSION))))
        path = executable
    else:
        path = module.get_bin_path(executable, required=False)
        if path is None:
            module.fail_json(msg="nvram_apply: the %s command was not found on this host "
                                 "(PATH=%s): install nvram %s or later, or give its path with "
                                 "the executable option"
                                 % (executable, os.environ.get("PATH", ""),
                                    ".".join(map(str, MIN_VERSION))))
    rc, out, err = module.run_command([path, "--version"])
    version = parse_version(out) if rc == 0 else None
    if version is None:
        module.fail_json(msg="nvram_apply: %s --version did not print an nvram version "
                             "(exit status %d, output %r): is it nvram?"
                             % (path, rc, (out + err).strip()[:200]))
    if version < MIN_VERSION:
        module.fail_json(msg="nvram_apply: %s is nvram %s, too old: nvram_apply needs nvram %s "
                             "or later (apply --json and --dry-run)"
                             % (path, ".".join(map(str, version)),
                                ".".join(map(str, MIN_VERSION))),
                         nvram_version=".".join(map(str, version)))
    return path, ".".join(map(str, version))


def run_apply(module, cmd):
    """Runs nvram apply --json; returns (rc, results, summary line); fails on a bad run."""
    rc, out, err = module.run_command(cmd)
    summary = err.strip().splitlines()[-1] if err.strip() else ""
    results = None
    if rc in (0, 1, 3) and out.strip():
        try:
            results = json.loads(out)
        except ValueError:
            results = None
    if not isinstance(results, list):
        module.fail_json(msg="nvram_apply: nvram apply failed (exit status %d): %s"
                             % (rc, err.strip() or out.strip()),
                         rc=rc, cmd=cmd, stdout=out, stderr=err)
    return rc, results, summary


def variables(module, nvram, path, params):
    """The store's live variables as `nvram list` prints them, one per line, sorted."""
    cmd = [nvram, "list", path]
    if params.get("format") is not None:
        cmd += ["--format", params["format"]]
    rc, out, err = module.run_command(cmd)
    if rc != 0:
        return "(cannot list: %s)\n" % err.strip()
    lines = sorted(line.rstrip() for line in out.splitlines() if line.strip())
    return "".join(line + "\n" for line in lines)


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    if not any(params.get(name) for name in EDITS):
        module.fail_json(msg="nvram_apply: no edit: give one of " + ", ".join(EDITS))
    if not any(params.get(name) for name in SELECTION + ("libvirt",)):
        module.fail_json(msg="nvram_apply: no stores: give files, dir, files_from or libvirt")
    if "-" in (params.get("files_from") or []):
        module.fail_json(msg="nvram_apply: files_from '-' (standard input) is not available "
                             "to a module: give a file")
    given = params.get("wait")
    if given is not None:
        # A number (seconds) or 'forever'; YAML gives numbers as int or float.
        wait = params["wait"] = str(given)
        try:
            if wait != "forever" and (isinstance(given, bool) or float(wait) < 0):
                raise ValueError
        except ValueError:
            module.fail_json(msg="nvram_apply: wait must be 'forever' or a number of seconds, "
                                 "not %r" % wait)

    nvram, version = find_nvram(module)
    edit = edit_args(params)
    selection = selection_args(params)
    base = [nvram, "apply", "--json"]
    diff = []

    if module._diff:
        # Which stores the edit would change, and what they hold now.
        _, planned, _ = run_apply(module, base + ["--dry-run"] + edit + selection)
        before = {r["file"]: variables(module, nvram, r["file"], params)
                  for r in planned if r["result"] == "would-change"}
    if module.check_mode:
        cmd = base + ["--dry-run"] + edit + selection
    else:
        cmd = base + edit + selection
    rc, results, summary = run_apply(module, cmd)

    if module._diff:
        changed_files = [r["file"] for r in results if r["result"] in CHANGED]
        after = {}
        if module.check_mode:
            # Edit copies to show the result; the stores stay as they are.
            scratch = tempfile.mkdtemp(prefix="nvram_apply-diff-")
            try:
                copies = {}
                for index, path in enumerate(changed_files):
                    copy_dir = os.path.join(scratch, str(index))
                    os.mkdir(copy_dir)
                    copies[path] = os.path.join(copy_dir, os.path.basename(path))
                    shutil.copyfile(path, copies[path])
                if copies:
                    run_apply(module, base + edit + ["--"] + list(copies.values()))
                for path, copy in copies.items():
                    after[path] = variables(module, nvram, copy, params)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        else:
            for path in changed_files:
                after[path] = variables(module, nvram, path, params)
        for path in changed_files:
            diff.append(dict(before_header=path, after_header=path,
                             before=before.get(path, ""), after=after.get(path, "")))

    stores = []
    counts = dict(changed=0, unchanged=0, skipped=0, failed=0, changed_not_durable=0,
                  would_change=0)
    for r in results:
        result = r.get("result", "")
        store = dict(file=r.get("file", ""), result=result, detail=r.get("detail", ""),
                     changed=result in CHANGED)
        if "domain" in r:
            store["domain"] = r["domain"]
        stores.append(store)
        key = result.replace("-", "_")
        counts[key] = counts.get(key, 0) + 1
    counts["total"] = len(results)
    locked = [s["file"] for s in stores if s["result"] == "skipped"]
    failed = [s["file"] for s in stores if s["result"] == "failed"]
    changed = any(s["changed"] for s in stores)

    out = dict(changed=changed, stores=stores, summary=counts, locked=locked,
               failed_stores=failed, cmd=cmd, rc=rc, nvram_version=version, msg=summary)
    if module._diff:
        out["diff"] = diff
    for s in stores:
        if s["result"] == "skipped":
            module.warn("%s: locked by another process, not touched (%s)"
                        % (s["file"], s["detail"]))
        elif s["result"] == "changed-not-durable":
            module.warn("%s: changed, but not durable: a host crash may bring the old content "
                        "back (%s)" % (s["file"], s["detail"]))
    if failed or (params["strict"] and locked):
        problems = ["%s: %s" % (s["file"], s["detail"]) for s in stores
                    if s["result"] == "failed" or (params["strict"] and s["result"] == "skipped")]
        what = []
        if failed:
            what.append("%d of %d stores failed" % (len(failed), len(stores)))
        if params["strict"] and locked:
            what.append("%d of %d stores locked (strict)" % (len(locked), len(stores)))
        out["msg"] = "nvram_apply: %s: %s" % (", ".join(what), "; ".join(problems))
        module.fail_json(**out)
    module.exit_json(**out)


if __name__ == "__main__":
    main()
