"""A seccomp filter for bubblewrap sandboxes (where libseccomp is available).

Denies, with EPERM, the system calls a sandbox never needs and an escape often does:
ptrace, mount and namespace changes, kernel keyrings, bpf, module loading, raw and
packet sockets, terminal input injection. bwrap installs it just before exec.
"""

from __future__ import annotations

import errno
import os
import tempfile

DENIED = (
    "ptrace", "process_vm_readv", "process_vm_writev", "mount", "umount2", "pivot_root",
    "unshare", "setns", "keyctl", "add_key", "request_key", "bpf", "perf_event_open",
    "userfaultfd", "kexec_load", "kexec_file_load", "init_module", "finit_module",
    "delete_module", "reboot", "swapon", "swapoff", "acct", "syslog", "open_by_handle_at",
    "name_to_handle_at", "fsopen", "fsmount", "move_mount", "open_tree", "quotactl",
    "lookup_dcookie", "iopl", "ioperm", "settimeofday", "clock_settime", "vhangup",
)
AF_PACKET = 17
SOCK_RAW = 3
TIOCSTI = 0x5412
CLONE_NEWUSER = 0x10000000


def _build():
    import pyseccomp as sc

    f = sc.SyscallFilter(sc.ALLOW)
    eperm = sc.ERRNO(errno.EPERM)
    for name in DENIED:
        try:
            f.add_rule(eperm, name)
        except (RuntimeError, ValueError, OSError):
            continue  # a syscall this kernel/arch does not have
    f.add_rule(eperm, "socket", sc.Arg(0, sc.EQ, AF_PACKET))
    f.add_rule(eperm, "socket", sc.Arg(1, sc.MASKED_EQ, 0xF, SOCK_RAW))
    f.add_rule(eperm, "ioctl", sc.Arg(1, sc.MASKED_EQ, 0xFFFFFFFF, TIOCSTI))
    f.add_rule(eperm, "clone", sc.Arg(0, sc.MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER))
    # clone3 passes flags in memory seccomp cannot read: make libc fall back to clone.
    f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    return f


_BPF: bytes | None = None
_AVAILABLE: bool | None = None


def available() -> bool:
    global _AVAILABLE, _BPF
    if _AVAILABLE is None:
        try:
            with tempfile.TemporaryFile() as tmp:
                _build().export_bpf(tmp)
                tmp.seek(0)
                _BPF = tmp.read()
            _AVAILABLE = bool(_BPF)
        except Exception:  # no libseccomp on this machine
            _AVAILABLE = False
    return _AVAILABLE


def seccomp_filter_fd() -> int | None:
    """A readable fd holding the compiled BPF program, or None without libseccomp."""
    if not available() or _BPF is None:
        return None
    r, w = os.pipe()
    os.write(w, _BPF)  # a few hundred bytes: fits the pipe buffer
    os.close(w)
    return r
