"""Boot the appliance ISO under qemu and check it end to end (`just iso-test`).

Boot 1 (BIOS, or the firmware given first): a fresh ext4 data disk (label SOVEREIGN-DATA) and a
config drive (ISO 9660, label SOVEREIGN-CFG) carrying the test's key as an admin and a request
for a diagnostic export. The test waits for the ready line on the serial console, logs in with
the real `ssh` client in tmux and checks that the TUI is on the screen, waits for the export line
(`sovereign-tui export --attach` through the feed, written to the data disk), then powers off.
The export and the audit log are read back from the data disk image with debugfs.

Boot 2 (UEFI with OVMF): the same data disk, no config drive. The host key's fingerprint must be
the same, the operator key must still admit the test, and the audit log must keep boot 1's login.

Needs: qemu-system-x86_64, OVMF, ssh, ssh-keygen, tmux, xorriso, mkfs.ext4, debugfs. KVM is used
when /dev/kvm is usable, TCG otherwise (much slower: the timeouts grow to match);
SOVEREIGN_ISO_ACCEL=tcg forces TCG.
Timings are printed: boot to ready, SSH login to the TUI on screen.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
READY = re.compile(
    rb"sovereign-tui: ready: ssh -p 2222 \S+ host key (SHA256:[A-Za-z0-9+/]+) mode (\w+) data (\w+)"
)
EXPORT = re.compile(rb"sovereign-tui: export: (ok (\d+) bytes sha256 ([0-9a-f]{64})|FAILED: [^\r\n]*)")
OVMF = ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/ovmf/OVMF.fd")
TOOLS = ("qemu-system-x86_64", "ssh", "ssh-keygen", "tmux", "xorriso", "mkfs.ext4", "debugfs")


class SmokeError(Exception):
    """The appliance failed a check: one line naming it."""


def run(*args: str, **kw: object) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, check=False, **kw)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise SmokeError(f"{' '.join(args[:3])}: exit {proc.returncode}: {proc.stderr.strip()[-400:]}")
    return str(proc.stdout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


ACCEL = os.environ.get("SOVEREIGN_ISO_ACCEL", "auto")


def kvm_usable() -> bool:
    """KVM when /dev/kvm is usable, unless SOVEREIGN_ISO_ACCEL=tcg (some nested hosts expose a
    /dev/kvm whose guests hang in early boot)."""
    if ACCEL == "tcg":
        return False
    return os.access("/dev/kvm", os.R_OK | os.W_OK)


class Vm:
    """One qemu run: serial console to a file, SSH forwarded to a loopback port, QMP for power."""

    def __init__(self, work: Path, name: str, iso: Path, firmware: str, disks: list[Path]) -> None:
        self.work, self.name = work, name
        self.serial = work / f"{name}.serial.log"
        self.qmp = work / f"{name}.qmp"
        self.port = free_port()
        args = ["qemu-system-x86_64", "-m", "2048", "-smp", "2", "-display", "none", "-no-user-config"]
        args += ["-accel", "kvm", "-cpu", "host"] if kvm_usable() else ["-accel", "tcg", "-cpu", "max"]
        if firmware == "uefi":
            code = next((p for p in OVMF if Path(p).exists()), None)
            if code is None:
                raise SmokeError("no OVMF firmware for the UEFI boot: apt-get install ovmf")
            args += ["-drive", f"if=pflash,format=raw,readonly=on,file={code}"]
            vars_src = Path(code.replace("CODE", "VARS"))
            if vars_src.exists():
                vars_copy = work / f"{name}.vars.fd"
                shutil.copy(vars_src, vars_copy)
                args += ["-drive", f"if=pflash,format=raw,file={vars_copy}"]
        args += ["-drive", f"file={iso},media=cdrom,readonly=on,if=ide", "-boot", "d"]
        for disk in disks:
            fmt = "raw"
            ro = ",readonly=on" if disk.suffix == ".iso" else ""
            args += ["-drive", f"file={disk},format={fmt},if=virtio{ro}"]
        args += [
            "-netdev",
            f"user,id=net0,hostfwd=tcp:127.0.0.1:{self.port}-:2222",
            "-device",
            "virtio-net-pci,netdev=net0",
            "-serial",
            f"file:{self.serial}",
            "-qmp",
            f"unix:{self.qmp},server=on,wait=off",
            "-monitor",
            "none",
        ]
        self.started = time.monotonic()
        with open(work / f"{name}.qemu.err", "w") as err:
            self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err)

    def console(self) -> bytes:
        return self.serial.read_bytes() if self.serial.exists() else b""

    def wait_for(self, pattern: re.Pattern[bytes], timeout_s: float, what: str) -> re.Match[bytes]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = pattern.search(self.console())
            if found:
                return found
            if self.proc.poll() is not None:
                raise SmokeError(f"{self.name}: qemu exited ({self.proc.returncode}) before {what}")
            time.sleep(0.5)
        raise SmokeError(f"{self.name}: no {what} on the serial console in {timeout_s:.0f} s ({self.serial})")

    def power_off(self, timeout_s: float) -> None:
        """ACPI power button (a clean shutdown flushes the data disk), then kill if it hangs."""
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.qmp))
            s.settimeout(5)
            s.recv(4096)
            s.sendall(b'{"execute":"qmp_capabilities"}\n')
            s.recv(4096)
            s.sendall(b'{"execute":"system_powerdown"}\n')
            s.recv(4096)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise SmokeError(f"{self.name}: no clean shutdown in {timeout_s:.0f} s") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def ssh_tui(work: Path, key: Path, port: int, known_hosts: Path, timeout_s: float) -> tuple[float, str]:
    """Log in with the real ssh client in a tmux pane; seconds until the TUI is on the screen."""
    session = f"smoke{os.getpid()}"
    cmd = (
        f"ssh -tt -i {key} -p {port} -o IdentitiesOnly=yes -o BatchMode=yes "
        f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=accept-new smoke@127.0.0.1"
    )
    env = {**os.environ, "TMUX_TMPDIR": str(work)}
    run("tmux", "new-session", "-d", "-s", session, "-x", "140", "-y", "40", cmd, env=env)
    start = time.monotonic()
    screen = ""
    try:
        while time.monotonic() - start < timeout_s:
            with contextlib.suppress(SmokeError):
                screen = run("tmux", "capture-pane", "-p", "-t", session, env=env)
            if "sovereign-tui" in screen and "Permission denied" not in screen:
                return time.monotonic() - start, screen
            if "Permission denied" in screen or "Connection refused" in screen:
                break
            time.sleep(0.25)
    finally:
        with contextlib.suppress(SmokeError):
            run("tmux", "kill-server", env=env)
    raise SmokeError(f"ssh login: the TUI did not show in {timeout_s:.0f} s; screen:\n{screen[-1500:]}")


def disk_file(image: Path, path: str) -> bytes:
    out = subprocess.run(["debugfs", "-R", f"cat {path}", str(image)], capture_output=True, check=False)
    return out.stdout


def fingerprint(known_hosts: Path) -> str:
    return run("ssh-keygen", "-lf", str(known_hosts)).split()[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iso", type=Path, default=HERE / "out" / "sovereign-tui.iso")
    ap.add_argument("--first", choices=("bios", "uefi"), default="bios", help="firmware of boot 1")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, disks)")
    args = ap.parse_args()
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        print(
            f"smoke: missing {', '.join(missing)}: apt-get install qemu-system-x86 ovmf openssh-client "
            "tmux xorriso e2fsprogs",
            file=sys.stderr,
        )
        return 2
    if not args.iso.exists():
        print(f"smoke: no ISO at {args.iso}: run `just iso` first", file=sys.stderr)
        return 2
    kvm = kvm_usable()
    boot_timeout = 240.0 if kvm else 1200.0
    (HERE / "out").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="smoke-", dir=HERE / "out"))
    print(f"smoke: {args.iso} ({args.iso.stat().st_size >> 20} MiB), {'KVM' if kvm else 'TCG'}, work {work}")
    vms: list[Vm] = []
    try:
        key = work / "id_ed25519"
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "smoke", "-f", str(key))
        cfg = work / "cfg"
        cfg.mkdir()
        pub = (work / "id_ed25519.pub").read_text().strip()
        (cfg / "authorized_keys").write_text(f'sovereign-role="admin",sovereign-name="smoke" {pub}\n')
        (cfg / "export-on-boot").write_text("")
        cfg_iso = work / "config-drive.iso"
        run(
            "xorriso",
            "-as",
            "mkisofs",
            "-quiet",
            "-V",
            "SOVEREIGN-CFG",
            "-r",
            "-J",
            "-o",
            str(cfg_iso),
            str(cfg),
        )
        data = work / "data.img"
        with open(data, "wb") as f:
            f.truncate(128 << 20)
        run("mkfs.ext4", "-q", "-F", "-L", "SOVEREIGN-DATA", str(data))

        firmwares = (args.first, "uefi" if args.first == "bios" else "bios")
        # --- boot 1 ---
        vm = Vm(work, f"boot1-{firmwares[0]}", args.iso, firmwares[0], [data, cfg_iso])
        vms.append(vm)
        ready = vm.wait_for(READY, boot_timeout, "ready line")
        t_ready1 = time.monotonic() - vm.started
        fp1, mode, persist = (g.decode() for g in ready.groups())
        print(
            f"smoke: boot 1 ({firmwares[0]}): ready in {t_ready1:.1f} s, "
            f"host key {fp1}, {mode}, data {persist}"
        )
        if persist != "persistent":
            raise SmokeError("boot 1: the data disk (SOVEREIGN-DATA) was not mounted")
        kh = work / "known_hosts"
        t_login1, _ = ssh_tui(work, key, vm.port, kh, 120.0 if kvm else 600.0)
        print(f"smoke: boot 1: ssh login to the TUI on screen in {t_login1:.1f} s")
        if fingerprint(kh) != fp1:
            raise SmokeError(
                f"boot 1: the SSH host key {fingerprint(kh)} is not the one on the console {fp1}"
            )
        exported = vm.wait_for(EXPORT, 300.0 if kvm else 1200.0, "export line")
        if exported.group(2) is None:
            raise SmokeError(f"boot 1: {exported.group(1).decode()}")
        size, digest = int(exported.group(2)), exported.group(3).decode()
        t = time.monotonic()
        vm.power_off(120.0 if kvm else 600.0)
        print(f"smoke: boot 1: export {size} bytes; clean power-off in {time.monotonic() - t:.1f} s")

        body = disk_file(data, "/export.json")
        if len(body) != size or hashlib.sha256(body).hexdigest() != digest:
            raise SmokeError("the export on the data disk does not match the console's line")
        snapshot = json.loads(body)
        if not isinstance(snapshot, dict) or not snapshot:
            raise SmokeError("the export is not a JSON object")
        print(f"smoke: export.json on the data disk: keys {', '.join(sorted(snapshot)[:8])}")
        logins1 = disk_file(data, "/audit.log").count(b'"login"')
        if logins1 < 1:
            raise SmokeError("boot 1: no login in the audit log on the data disk")

        # --- boot 2: the other firmware, same data disk, no config drive ---
        vm = Vm(work, f"boot2-{firmwares[1]}", args.iso, firmwares[1], [data])
        vms.append(vm)
        ready = vm.wait_for(READY, boot_timeout, "ready line")
        t_ready2 = time.monotonic() - vm.started
        fp2, mode, persist = (g.decode() for g in ready.groups())
        print(
            f"smoke: boot 2 ({firmwares[1]}): ready in {t_ready2:.1f} s, "
            f"host key {fp2}, {mode}, data {persist}"
        )
        if fp2 != fp1:
            raise SmokeError(f"boot 2: the host key changed ({fp1} -> {fp2}): it did not persist")
        t_login2, _ = ssh_tui(work, key, vm.port, kh, 120.0 if kvm else 600.0)  # same known_hosts
        print(f"smoke: boot 2: ssh login (key kept on the data disk) in {t_login2:.1f} s")
        vm.power_off(120.0 if kvm else 600.0)
        logins2 = disk_file(data, "/audit.log").count(b'"login"')
        if logins2 <= logins1:
            raise SmokeError(f"the audit log did not keep boot 1's logins ({logins1} then {logins2})")
        print(f"smoke: audit log on the data disk: {logins1} login(s) after boot 1, {logins2} after boot 2")
        print(
            f"smoke: PASS  boot-to-ready {firmwares[0]} {t_ready1:.1f} s, {firmwares[1]} {t_ready2:.1f} s; "
            f"ssh login {t_login1:.1f} s, {t_login2:.1f} s"
        )
        return 0
    except SmokeError as exc:
        print(f"smoke: FAIL: {exc}", file=sys.stderr)
        for vm in vms:
            print(f"smoke: serial console of {vm.name}: {vm.serial}", file=sys.stderr)
        args.keep = True
        return 1
    finally:
        for vm in vms:
            vm.kill()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
