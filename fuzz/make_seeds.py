#!/usr/bin/env python3
"""Writes a small seed corpus for every fuzz target into corpus/TARGET/ (see README.md).

Seeds come from the repository (the distribution CA certificates, the pflash trace
recordings) and the system (Debian's OVMF varstores, QEMU's firmware descriptors) where
present; missing sources are skipped."""
import base64, glob, lzma, os, struct, uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
X509 = uuid.UUID("a5c059a1-94e4-4aa7-87b5-ab155c2bf072").bytes_le
SHA256 = uuid.UUID("c1c41626-504c-4092-aca9-41f936934328").bytes_le
PKCS7 = uuid.UUID("4aafd29d-68df-49ee-8aa9-347d375665a7").bytes_le
OWNER = uuid.UUID("77fa9abd-0359-4d32-bd60-28f4e78f784b").bytes_le


def put(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def esl(sig_type, entries):
    size = 16 + len(entries[0])
    out = sig_type + struct.pack("<III", 28 + size * len(entries), 0, size)
    for e in entries:
        out += OWNER + e
    return out


def auth_header():
    return bytes([0xE8, 7, 1, 2, 3, 4, 5] + [0] * 9) + struct.pack("<IHH", 24, 0x200, 0xEF1) + PKCS7


certs = [open(p, "rb").read() for p in sorted(glob.glob(os.path.join(ROOT, "crates/nvram/certs/*.der")))]
hashes = esl(SHA256, [bytes([i]) * 32 for i in range(3)])
lists = b"".join(esl(X509, [c]) for c in certs) + hashes
put("signature_lists", "certs-and-hashes.esl", lists)
put("signature_lists", "hashes.esl", hashes)
put("auth", "raw.auth", auth_header() + lists)
put("auth", "mode1", b"\x01" + lists)
for i, c in enumerate(certs):
    put("certificate", f"cert{i}.der", c)
    pem = base64.encodebytes(c).decode()
    put("certificate", f"cert{i}.pem", f"-----BEGIN CERTIFICATE-----\n{pem}-----END CERTIFICATE-----\n".encode())
    put("certificate", f"cert{i}.b64", pem.encode())

g = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
put("import_json", "qemu.json", f'''{{"version": 2, "variables": [
 {{"name": "Timeout", "guid": "{g}", "attr": 7, "data": "0500"}},
 {{"name": "PK", "guid": "{g}", "attr": 39, "data": "00", "time": "e8070102030405000000000000000000", "digest": "ab"}}]}}'''.encode())
put("import_json", "uefivars.json", f'''{{"variables": [
 {{"name": "Lang", "guid": "{g}", "attr": 7, "data": "656e6700", "timestamp": "00000000000000000000000000000000"}}]}}'''.encode())

# Boot0000 as OVMF writes it: "UiApp", a firmware volume file path.
desc = "UiApp\0".encode("utf-16-le")
path = bytes([4, 7, 20, 0]) + uuid.UUID("7cb8bdc9-f8eb-4f34-aaea-3ee4af6516a1").bytes_le
path += bytes([4, 6, 20, 0]) + uuid.UUID("462caa21-7614-4503-836e-8ab6f4662331").bytes_le
path += bytes([0x7F, 0xFF, 4, 0])
put("load_option", "boot0000", struct.pack("<IH", 9, len(path)) + desc + path)
put("load_option", "file-path", b"\\EFI\\BOOT\\BOOTX64.EFI")
put("load_option", "uri", b"http://192.168.0.1/boot.efi")

for p in sorted(glob.glob("/usr/share/qemu/firmware/*.json")):
    put("firmware_descriptor", os.path.basename(p), open(p, "rb").read())

trace = os.path.join(ROOT, "crates/pflash/tests/data/ovmf-boot-ops.txt.xz")
if os.path.exists(trace):
    put("trace", "ovmf-boot-head", lzma.open(trace).read()[:16384])
put("migration_stream", "snapshot-ff", b"\x01")
put("migration_stream", "snapshot-seed", b"\x07\x00\x01\x02\x03\x04\x05")

for p in ["/usr/share/OVMF/OVMF_VARS_4M.ms.fd", "/usr/share/OVMF/OVMF_VARS.ms.fd"]:
    if os.path.exists(p):
        put("parse", os.path.basename(p), open(p, "rb").read())

# qcow2: small images qemu-img makes (both versions, 512 B and 4 KiB clusters, compressed,
# with internal snapshots) from the head of an OVMF varstore; skipped without qemu-img.
import shutil, subprocess, tempfile
ovmf = "/usr/share/OVMF/OVMF_VARS.fd"
if shutil.which("qemu-img") and os.path.exists(ovmf):
    with tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(tmp, "in.raw")
        with open(raw, "wb") as f:
            f.write(open(ovmf, "rb").read()[:16384])

        def qimg(name, *args, snapshots=()):
            out = os.path.join(tmp, name)
            subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", *args, raw, out], check=True)
            for s in snapshots:
                subprocess.run(["qemu-img", "snapshot", "-c", s, out], check=True)
            put("qcow2", name, open(out, "rb").read())

        for compat in ["0.10", "1.1"]:
            for cluster in ["512", "4096"]:
                qimg(f"seed-{compat}-{cluster}.qcow2", "-o", f"compat={compat},cluster_size={cluster}")
        qimg("seed-compressed.qcow2", "-c", "-o", "cluster_size=512")
        qimg("seed-snap.qcow2", "-o", "cluster_size=512", snapshots=["a", "b"])
