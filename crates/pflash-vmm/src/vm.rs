//! The KVM virtual machine: memory slots, one vCPU, and the run loop.
//!
//! Slots: RAM at 0, the code flash read-only at the top of 4 GiB, and the vars flash
//! read-only directly below it while the device is in read-array mode. With
//! `KVM_MEM_READONLY` a guest read of a slot is served by the hardware and a write exits as
//! MMIO; without the slot both exit as MMIO and go to the device.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_bindings::{
    kvm_fpu, kvm_regs, kvm_sregs, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES,
    KVM_MEM_READONLY,
};
use kvm_ioctls::{Cap, Kvm, VcpuExit, VcpuFd, VmFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use crate::exits::Exits;
use crate::flash::VarsFlash;
use crate::latency::{HandlerLatency, LatencySummary};
use crate::layout::{FlashMap, RAM_SIZE, TSS_ADDRESS};

/// Slot numbers.
const SLOT_RAM: u32 = 0;
const SLOT_CODE: u32 = 1;
const SLOT_VARS: u32 = 2;

/// COM1's data register and line status register (transmitter empty and idle).
const COM1: u16 = 0x3f8;
const COM1_LSR: u16 = 0x3fd;
const LSR_IDLE: u8 = 0x60;
/// QEMU's `isa-debug-exit,iobase=0xf4,iosize=0x04`.
const DEBUG_EXIT: u16 = 0xf4;

/// Most serial output kept for the report (the sink gets all of it).
const SERIAL_KEPT: usize = 64 << 10;

/// Why the VM cannot be set up or run.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// A KVM ioctl failed.
    #[error("KVM: {what}: {source}")]
    Kvm {
        /// The operation.
        what: &'static str,
        /// The error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// The host's KVM lacks something the VMM needs.
    #[error("KVM lacks {0}")]
    Unsupported(&'static str),
    /// The watchdog's signal handler cannot be installed.
    #[error("watchdog: installing the signal handler: {0}")]
    Watchdog(#[source] vmm_sys_util::errno::Error),
    /// Guest memory cannot be set up, read or written.
    #[error("guest memory: {what}: {source}")]
    Memory {
        /// The operation.
        what: &'static str,
        /// vm-memory's (or the memory map's) error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A snapshot's RAM is not the VM's size.
    #[error("guest memory: snapshot RAM is {len} bytes, the VM has {RAM_SIZE}")]
    SnapshotRam {
        /// The snapshot's RAM size.
        len: usize,
    },
    /// The guest stopped in a way only a broken guest can.
    #[error("guest failed: {0}")]
    Guest(String),
    /// The guest did not finish in time.
    #[error("guest still running after {seconds} s (rip {rip:#x})")]
    Timeout {
        /// The limit.
        seconds: u64,
        /// Where the vCPU was.
        rip: u64,
    },
    /// The serial sink cannot be written.
    #[error("serial output: {0}")]
    Serial(#[source] std::io::Error),
}

fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { what, source }
}

fn memory_error<E: std::error::Error + Send + Sync + 'static>(
    what: &'static str,
) -> impl FnOnce(E) -> VmError {
    move |source| VmError::Memory {
        what,
        source: Box::new(source),
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The guest wrote `value` to `isa-debug-exit` (QEMU exits with `(value << 1) | 1`).
    DebugExit(u32),
    /// The guest halted: without an interrupt controller nothing wakes it up.
    Halted,
    /// The caller's stop condition held (after a flash access).
    Stopped,
}

/// The VM besides the vars flash, at a point where the guest can resume elsewhere: taken by
/// [`Vm::snapshot`] after [`Outcome::Stopped`], resumed by [`Vm::from_snapshot`] in a new VM
/// with the same [`VarsFlash`] (or one rebuilt from its state and content).
///
/// It holds what this VMM's guests use: the general and segment registers (control
/// registers and EFER included), the FPU/SSE state, RAM and the code image. There is no
/// interrupt controller, timer or paging-related MSR to carry.
#[derive(Clone)]
pub struct VmSnapshot {
    /// General registers.
    pub regs: kvm_regs,
    /// Segment, descriptor-table and control registers.
    pub sregs: kvm_sregs,
    /// x87/SSE state.
    pub fpu: kvm_fpu,
    /// Guest RAM (from address 0).
    pub ram: Vec<u8>,
    /// The code flash image.
    pub code: Vec<u8>,
    /// Exits so far, so that counts (and the flash access number) continue.
    pub exits: Exits,
}

impl std::fmt::Debug for VmSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmSnapshot")
            .field("rip", &format_args!("{:#x}", self.regs.rip))
            .field("ram", &self.ram.len())
            .field("code", &self.code.len())
            .field("exits", &self.exits)
            .finish_non_exhaustive()
    }
}

/// A VM running a code-flash image with the vars flash device.
pub struct Vm {
    _kvm: Kvm,
    vm: VmFd,
    vcpu: VcpuFd,
    map: FlashMap,
    /// RAM and the code flash; declared after `vm` and `vcpu` so that it is unmapped after
    /// they close.
    memory: GuestMemoryMmap,
    flash: VarsFlash,
    vars_mapped: bool,
    exits: Exits,
    write_latency: HandlerLatency,
    serial: Vec<u8>,
    serial_sink: Box<dyn Write>,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm")
            .field("map", &self.map)
            .field("flash", &self.flash)
            .field("vars_mapped", &self.vars_mapped)
            .field("exits", &self.exits)
            .finish_non_exhaustive()
    }
}

impl Vm {
    /// A VM with RAM, `code` as the code flash and `flash` as the vars flash, its vCPU at the
    /// reset vector; serial output goes to `serial_sink`.
    ///
    /// # Errors
    ///
    /// `/dev/kvm` cannot be opened, lacks read-only memory slots, or an ioctl fails; the
    /// code image has a size QEMU would refuse.
    pub fn new(code: &[u8], flash: VarsFlash, serial_sink: Box<dyn Write>) -> Result<Vm, VmError> {
        let mut vm = Self::create(code, flash, serial_sink)?;
        if vm.flash.is_array_mode() {
            vm.map_vars(true)?;
        }
        Ok(vm)
    }

    /// A VM resuming `snapshot` with `flash` (in the state it had when the snapshot was
    /// taken); serial output goes to `serial_sink`.
    ///
    /// # Errors
    ///
    /// As for [`Vm::new`], and a snapshot whose RAM is not this VMM's size.
    pub fn from_snapshot(
        snapshot: &VmSnapshot,
        flash: VarsFlash,
        serial_sink: Box<dyn Write>,
    ) -> Result<Vm, VmError> {
        if snapshot.ram.len() as u64 != RAM_SIZE {
            return Err(VmError::SnapshotRam {
                len: snapshot.ram.len(),
            });
        }
        let mut vm = Self::create(&snapshot.code, flash, serial_sink)?;
        // The new VM's RAM is zero: writing only the other pages spares faulting in all of
        // it (a migration's downtime).
        const PAGE: usize = 4096;
        for (i, page) in snapshot.ram.chunks(PAGE).enumerate() {
            if page != &[0u8; PAGE][..page.len()] {
                vm.memory
                    .write_slice(page, GuestAddress((i * PAGE) as u64))
                    .map_err(memory_error("writing the RAM"))?;
            }
        }
        vm.vcpu
            .set_sregs(&snapshot.sregs)
            .map_err(kvm("KVM_SET_SREGS"))?;
        vm.vcpu
            .set_regs(&snapshot.regs)
            .map_err(kvm("KVM_SET_REGS"))?;
        vm.vcpu.set_fpu(&snapshot.fpu).map_err(kvm("KVM_SET_FPU"))?;
        vm.exits = snapshot.exits;
        if vm.flash.is_array_mode() {
            vm.map_vars(true)?;
        }
        Ok(vm)
    }

    /// The VM's state, after completing the access of the last exit.
    ///
    /// KVM finishes an MMIO or port access only at the next `KVM_RUN` (it copies a read's
    /// data into the register, advances RIP). A snapshot taken before that would make the
    /// resumed guest perform the access a second time: a byte program's command would reach
    /// the device twice. So this first enters `KVM_RUN` with `immediate_exit` set, which
    /// completes the access and returns at once without running guest code.
    ///
    /// # Errors
    ///
    /// An ioctl fails.
    pub fn snapshot(&mut self) -> Result<VmSnapshot, VmError> {
        self.vcpu.set_kvm_immediate_exit(1);
        let completed = self.vcpu.run().map(|exit| format!("{exit:?}"));
        self.vcpu.set_kvm_immediate_exit(0);
        match completed {
            Err(e) if e.errno() == libc::EINTR => {}
            Err(source) => {
                return Err(VmError::Kvm {
                    what: "KVM_RUN (completing the last access)",
                    source,
                })
            }
            Ok(exit) => {
                return Err(VmError::Guest(format!(
                    "the guest ran while completing its last access: {exit}"
                )))
            }
        }
        let mut ram = vec![0u8; RAM_SIZE as usize];
        self.memory
            .read_slice(&mut ram, GuestAddress(0))
            .map_err(memory_error("reading the RAM"))?;
        let mut code = vec![0u8; self.map.code_len as usize];
        self.memory
            .read_slice(&mut code, GuestAddress(self.map.code_base))
            .map_err(memory_error("reading the code flash"))?;
        Ok(VmSnapshot {
            regs: self.vcpu.get_regs().map_err(kvm("KVM_GET_REGS"))?,
            sregs: self.vcpu.get_sregs().map_err(kvm("KVM_GET_SREGS"))?,
            fpu: self.vcpu.get_fpu().map_err(kvm("KVM_GET_FPU"))?,
            ram,
            code,
            exits: self.exits,
        })
    }

    /// Ends the VM and hands back its vars flash (to resume it in another VM).
    pub fn into_flash(self) -> VarsFlash {
        self.flash
    }

    fn create(code: &[u8], flash: VarsFlash, serial_sink: Box<dyn Write>) -> Result<Vm, VmError> {
        let map = FlashMap::q35(code.len() as u64, flash.len())
            .map_err(memory_error("the flash layout"))?;
        let kvm_handle = Kvm::new().map_err(kvm("opening /dev/kvm"))?;
        if !kvm_handle.check_extension(Cap::ReadonlyMem) {
            return Err(VmError::Unsupported(
                "read-only memory slots (KVM_CAP_READONLY_MEM)",
            ));
        }
        let vm = kvm_handle.create_vm().map_err(kvm("KVM_CREATE_VM"))?;
        vm.set_tss_address(TSS_ADDRESS)
            .map_err(kvm("KVM_SET_TSS_ADDR"))?;
        let memory = GuestMemoryMmap::<()>::from_ranges(&[
            (GuestAddress(0), RAM_SIZE as usize),
            (GuestAddress(map.code_base), code.len()),
        ])
        .map_err(memory_error("mapping the RAM and the code flash"))?;
        memory
            .write_slice(code, GuestAddress(map.code_base))
            .map_err(memory_error("writing the code flash"))?;
        for (slot, base, len, flags) in [
            (SLOT_RAM, 0, RAM_SIZE, 0),
            (SLOT_CODE, map.code_base, map.code_len, KVM_MEM_READONLY),
        ] {
            let host = memory
                .get_host_address(GuestAddress(base))
                .map_err(memory_error("host address of a slot"))?;
            let region = kvm_userspace_memory_region {
                slot,
                flags,
                guest_phys_addr: base,
                memory_size: len,
                userspace_addr: host as u64,
            };
            // SAFETY: `host` points at `len` bytes of `memory`, a mapping the Vm owns; the
            // VM and vCPU file descriptors are fields declared before it, so they close (and
            // KVM stops using the memory) before it is unmapped. The slots do not overlap.
            unsafe { vm.set_user_memory_region(region) }
                .map_err(kvm("KVM_SET_USER_MEMORY_REGION"))?;
        }
        let vcpu = vm.create_vcpu(0).map_err(kvm("KVM_CREATE_VCPU"))?;
        let cpuid = kvm_handle
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm("KVM_GET_SUPPORTED_CPUID"))?;
        vcpu.set_cpuid2(&cpuid).map_err(kvm("KVM_SET_CPUID2"))?;
        Ok(Vm {
            _kvm: kvm_handle,
            vm,
            vcpu,
            map,
            memory,
            flash,
            vars_mapped: false,
            exits: Exits::default(),
            write_latency: HandlerLatency::default(),
            serial: Vec::new(),
            serial_sink,
        })
    }

    /// Maps (`true`) or removes the vars flash slot.
    fn map_vars(&mut self, map: bool) -> Result<(), VmError> {
        if map == self.vars_mapped {
            return Ok(());
        }
        let (host, len) = self.flash.slot_host_memory();
        let region = kvm_userspace_memory_region {
            slot: SLOT_VARS,
            flags: KVM_MEM_READONLY,
            guest_phys_addr: self.map.vars_base,
            // A size of 0 deletes the slot.
            memory_size: if map { len } else { 0 },
            userspace_addr: host,
        };
        let started = Instant::now();
        // SAFETY: the slot memory is a mapping of `len` bytes owned by `self.flash`, which
        // lives as long as the VM (the slot is never re-pointed at other memory); it does
        // not overlap the other slots.
        unsafe { self.vm.set_user_memory_region(region) }
            .map_err(kvm("KVM_SET_USER_MEMORY_REGION (vars flash)"))?;
        self.vars_mapped = map;
        self.exits.slot_change_micros += started.elapsed().as_micros() as u64;
        if map {
            self.exits.slot_maps += 1;
        } else {
            self.exits.slot_unmaps += 1;
        }
        Ok(())
    }

    /// The exits so far.
    pub fn exits(&self) -> Exits {
        self.exits
    }

    /// How long the vars flash's write call took per MMIO write exit, so far.
    pub fn mmio_write_latency(&self) -> LatencySummary {
        self.write_latency.summary()
    }

    /// The serial output so far (its first 64 KiB).
    pub fn serial(&self) -> &[u8] {
        &self.serial
    }

    /// The vars flash.
    pub fn flash(&self) -> &VarsFlash {
        &self.flash
    }

    /// The vars flash, mutably (to flush it).
    pub fn flash_mut(&mut self) -> &mut VarsFlash {
        &mut self.flash
    }

    /// Runs the guest until it ends, or until `stop` returns `true` after a flash access
    /// (the point where a VMM would pause it, for example to migrate it).
    ///
    /// # Errors
    ///
    /// An ioctl fails, the guest shuts down (triple fault) or KVM reports an error.
    pub fn run(
        &mut self,
        timeout: Option<Duration>,
        stop: &mut dyn FnMut(&Exits) -> bool,
    ) -> Result<Outcome, VmError> {
        let watchdog = timeout.map(Watchdog::start).transpose()?;
        loop {
            let exit = match self.vcpu.run() {
                Ok(exit) => exit,
                Err(e) if e.errno() == libc::EINTR => {
                    if let Some(watchdog) = watchdog.as_ref().filter(|w| w.fired()) {
                        let rip = self.vcpu.get_regs().map_or(0, |r| r.rip);
                        return Err(VmError::Timeout {
                            seconds: watchdog.limit.as_secs(),
                            rip,
                        });
                    }
                    continue;
                }
                Err(source) => {
                    return Err(VmError::Kvm {
                        what: "KVM_RUN",
                        source,
                    })
                }
            };
            self.exits.total += 1;
            let mut flash_access = false;
            match exit {
                VcpuExit::MmioRead(gpa, data) => match self.map.vars_offset(gpa, data.len()) {
                    Some(offset) => {
                        self.exits.mmio_read += 1;
                        if self.flash.is_array_mode() {
                            self.exits.array_mode_read_exits += 1;
                        }
                        self.flash.read(offset, data);
                        flash_access = true;
                    }
                    None => {
                        self.exits.mmio_unhandled += 1;
                        data.fill(0xff);
                    }
                },
                VcpuExit::MmioWrite(gpa, data) => match self.map.vars_offset(gpa, data.len()) {
                    Some(offset) => {
                        self.exits.mmio_write += 1;
                        // vDSO clock reads: the measurement adds no system call.
                        let started = Instant::now();
                        self.flash.write(offset, data);
                        self.write_latency.record(started.elapsed());
                        flash_access = true;
                    }
                    None => self.exits.mmio_unhandled += 1,
                },
                VcpuExit::IoOut(port, data) => {
                    self.exits.pio += 1;
                    match port {
                        COM1 => {
                            if self.serial.len() < SERIAL_KEPT {
                                self.serial.extend_from_slice(data);
                            }
                            self.serial_sink.write_all(data).map_err(VmError::Serial)?;
                        }
                        DEBUG_EXIT => {
                            let mut value = [0u8; 4];
                            let n = data.len().min(4);
                            value[..n].copy_from_slice(&data[..n]);
                            self.serial_sink.flush().map_err(VmError::Serial)?;
                            return Ok(Outcome::DebugExit(u32::from_le_bytes(value)));
                        }
                        _ => {}
                    }
                }
                VcpuExit::IoIn(port, data) => {
                    self.exits.pio += 1;
                    data.fill(if port == COM1_LSR { LSR_IDLE } else { 0xff });
                }
                VcpuExit::Hlt => {
                    self.exits.hlt += 1;
                    self.serial_sink.flush().map_err(VmError::Serial)?;
                    return Ok(Outcome::Halted);
                }
                VcpuExit::Shutdown => {
                    return Err(VmError::Guest("shutdown (triple fault)".into()));
                }
                other => {
                    let what = format!("{other:?}");
                    let regs = self.vcpu.get_regs().ok();
                    return Err(VmError::Guest(format!(
                        "unexpected exit {what}, rip {:#x}",
                        regs.map_or(0, |r| r.rip)
                    )));
                }
            }
            if let Some(mode) = self.flash.take_mode_change() {
                self.map_vars(mode)?;
            }
            if flash_access {
                // Outside the MMIO handler: the writer's wake-up (if it parked) is a system
                // call of the run loop, not of the device.
                self.flash.kick();
            }
            if flash_access && stop(&self.exits) {
                return Ok(Outcome::Stopped);
            }
        }
    }
}

/// Interrupts `KVM_RUN` once a time limit has passed: a signal to the vCPU thread makes the
/// ioctl return `EINTR`. It repeats the signal until the run loop notices, since one that
/// arrives while the thread is outside `KVM_RUN` is lost.
struct Watchdog {
    limit: Duration,
    fired: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

extern "C" fn interrupt_kvm_run(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

impl Watchdog {
    fn start(limit: Duration) -> Result<Watchdog, VmError> {
        let signal = vmm_sys_util::signal::SIGRTMIN();
        vmm_sys_util::signal::register_signal_handler(signal, interrupt_kvm_run)
            .map_err(VmError::Watchdog)?;
        // SAFETY: pthread_self has no preconditions.
        let vcpu_thread = unsafe { libc::pthread_self() };
        let fired = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let (thread_fired, thread_done) = (fired.clone(), done.clone());
        let deadline = Instant::now() + limit;
        let thread = std::thread::spawn(move || {
            while !thread_done.load(Ordering::Acquire) {
                if Instant::now() >= deadline {
                    thread_fired.store(true, Ordering::Release);
                    // SAFETY: the vCPU thread is alive: it sets `done` and joins this thread
                    // before it returns from the run loop. Its handler for this signal is
                    // installed above and does nothing.
                    unsafe { libc::pthread_kill(vcpu_thread, signal) };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Ok(Watchdog {
            limit,
            fired,
            done,
            thread: Some(thread),
        })
    }

    fn fired(&self) -> bool {
        self.fired.load(Ordering::Acquire)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
