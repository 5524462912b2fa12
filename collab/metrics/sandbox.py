"""Run untrusted, model-written Python in a separate, locked-down process.

Model code is hostile by default: it may loop forever, fork-bomb, eat memory, fill the disk, read API keys, open
sockets or overwrite files. Every run therefore gets layers of isolation, each applied when the machine allows it
(which ones were active is reported in `SandboxResult.isolation`):

Always:
  - a fresh temporary working directory, deleted afterwards; stdin closed; stdout/stderr captured and truncated;
  - a scrubbed environment (PATH, LANG, HOME=TMPDIR=workdir: no API keys) and `python -I` (no user site, no
    PYTHON* variables, no cwd on sys.path);
  - rlimits: CPU seconds (RLIMIT_CPU), address space (RLIMIT_AS), processes (RLIMIT_NPROC), file size
    (RLIMIT_FSIZE, which also bounds captured output), no core dumps;
  - a new session/process group that is SIGKILLed as a whole on timeout, and a wall-clock deadline.
When running as root (the usual container case):
  - the code runs as a fresh, random, unused uid/gid with no supplementary groups and no_new_privs. That makes
    RLIMIT_NPROC effective (it is not enforced for root) and per-run (a shared `nobody` would make concurrent runs
    share one process budget and able to kill each other), makes root-owned files unwritable, and lets every
    leftover process be killed with one kill(-1) as that uid.
With namespaces (root with CAP_SYS_ADMIN, or an unprivileged user namespace):
  - a new network namespace (no interfaces up: even 127.0.0.1 is unreachable);
  - a new PID namespace whose init is the model's program: when it exits or is killed, the kernel kills every
    process it left behind, including ones that called setsid() to escape the process group;
  - a private mount namespace: the whole filesystem read-only (recursive mount_setattr; on older kernels
    read-only tmpfs over /tmp, /var/tmp, /dev/shm, /run/lock), a size-limited tmpfs as the working directory, a
    fresh /proc showing only the sandbox's processes, and directories the sandbox uid cannot enter that hold the
    Python installation (e.g. /root/.pyenv under a 0700 /root) masked by a tmpfs with only the interpreter bound
    back in.
Without namespaces, `socket` is patched in the child to refuse connections (weaker: code can undo it).

Known limits of the fallbacks: as root without namespaces the interpreter must be readable by other users (it is
not under a 0700 /root), and the run fails with SandboxUnavailable rather than running model code as root; /tmp
stays writable there. Not root and without user namespaces there is no uid isolation, and RLIMIT_NPROC counts all
of the user's processes and threads, so forking usually fails outright (safe, but strict).

Python 3.11 has no os.unshare, so namespaces are entered through libc via ctypes. The privileged setup runs in a
tiny bootstrap (this file run as a script) rather than in `preexec_fn`, which is unsafe in a multi-threaded
trainer.
"""

from __future__ import annotations

import json
import math
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Literal, NoReturn

ErrorKind = Literal["timeout", "memory", "killed", "exception", "syntax"]

SANDBOX_UID_FIRST = 200_000
SANDBOX_UID_COUNT = 1 << 20
"""Root runs use a random uid from [SANDBOX_UID_FIRST, SANDBOX_UID_FIRST + SANDBOX_UID_COUNT) when the container
maps it (else a random uid in 40000-59999 not listed in /etc/passwd)."""

PROCESS_MARKER = "collab-sandbox"
"""Every process of a run has f"{PROCESS_MARKER}-{run_id}" in its command line (ps shows them; tests look for
leftovers with it). Processes the program forks keep it; programs it execs do not."""

_SYNTAX_EXIT = 86  # the runner's exit code when the program does not compile
_SETUP_EXIT = 87  # the bootstrap's exit code when isolation could not be set up
_COMPILE_ERRORS = ("SyntaxError", "IndentationError", "TabError", "ValueError: source code")
_STARTUP_GRACE_S = 1.0  # two interpreter starts and the namespace setup, on top of the program's own time limit
_USERNS_UID = 1000  # the uid the program has inside an unprivileged user namespace (not 0: it must hold no caps)
_CHILD_PATH = "/usr/local/bin:/usr/bin:/bin"

# Linux constants (include/uapi/linux/sched.h, mount.h, prctl.h).
_CLONE_NEWNS = 0x00020000
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWPID = 0x20000000
_CLONE_NEWNET = 0x40000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 32, 4096, 16384, 1 << 18
_PR_SET_PDEATHSIG, _PR_SET_NO_NEW_PRIVS = 1, 38
_SYS_MOUNT_SETATTR = 442  # the same number on every architecture (new-style syscall table)
_AT_FDCWD, _AT_RECURSIVE, _MOUNT_ATTR_RDONLY = -100, 0x8000, 0x1
_WORLD_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/dev/mqueue")


@dataclass(frozen=True)
class SandboxResult:
    """What happened to one program.

    Attributes:
        passed: The program exited with status 0 within its limits.
        returncode: Exit status; negative for a signal (as in subprocess). None if it never finished.
        timed_out: It hit the wall-clock deadline or the CPU-time limit.
        stdout / stderr: Captured output, truncated to the run's `max_output_bytes`.
        error_kind: None when passed, else "timeout", "memory" (MemoryError under the address-space limit),
            "killed" (died from a signal), "syntax" (did not compile) or "exception" (any other non-zero exit).
        duration_s: Wall-clock seconds, including interpreter start.
        isolation: The isolation layers that were active (see the module docstring).
        run_id: Identifies the run's processes (see PROCESS_MARKER).
    """

    passed: bool
    returncode: int | None
    timed_out: bool
    stdout: str
    stderr: str
    error_kind: ErrorKind | None
    duration_s: float = 0.0
    isolation: tuple[str, ...] = field(default_factory=tuple)
    run_id: str = ""


class SandboxUnavailable(RuntimeError):
    """The sandbox itself could not run the program (as opposed to the program failing)."""


# ---------------------------------------------------------------------------------------------------------------
# Parent side
# ---------------------------------------------------------------------------------------------------------------


def run_python(
    code: str,
    *,
    timeout_s: float = 10.0,
    memory_mb: int = 512,
    max_processes: int = 16,
    max_file_mb: int = 16,
    max_output_bytes: int = 64 * 1024,
    python: str | None = None,
    use_namespaces: bool = True,
    module_name: str = "__main__",
) -> SandboxResult:
    """Run `code` as a Python program in the sandbox and report how it ended.

    Args:
        timeout_s: Wall-clock limit for the program (plus about a second for interpreter start); the CPU-time
            limit is the next whole second above it, plus one.
        memory_mb: Address-space limit; allocations beyond it raise MemoryError.
        max_processes: RLIMIT_NPROC (processes and threads of the run's uid; see the module docstring).
        max_file_mb: Largest file the program may write; also bounds its stdout and stderr.
        max_output_bytes: How much of stdout and of stderr is kept.
        python: Interpreter for the program (default: this one).
        use_namespaces: Set False to test the weaker fallback used on machines without namespaces.
        module_name: The program's `__name__`. Anything but "__main__" skips its `if __name__ == "__main__":`
            block, as HumanEval's harness does (such blocks often call input(), and stdin is closed).

    Raises SandboxUnavailable when the sandbox could not start the program; every outcome of the program itself
    (including crashes, hangs and hostile behaviour) is a SandboxResult.
    """
    base = tempfile.mkdtemp(prefix="collab-sandbox-")
    try:
        return _run(code, base, timeout_s, memory_mb, max_processes, max_file_mb, max_output_bytes, python,
                    use_namespaces, module_name)
    finally:
        _remove_tree(base)


def _run(
    code: str,
    base: str,
    timeout_s: float,
    memory_mb: int,
    max_processes: int,
    max_file_mb: int,
    max_output_bytes: int,
    python: str | None,
    use_namespaces: bool,
    module_name: str,
) -> SandboxResult:
    os.chmod(base, 0o711)  # the sandbox uid may pass through to its workdir but not list or touch the rest
    work = os.path.join(base, "work")
    os.mkdir(work, 0o700)
    with open(os.path.join(work, "solution.py"), "wb") as f:
        f.write(code.encode("utf-8", errors="surrogateescape"))
    uid = _pick_uid() if os.geteuid() == 0 else None
    if uid is not None:
        os.chown(work, uid, uid)
        os.chown(os.path.join(work, "solution.py"), uid, uid)
    interpreter = python or sys.executable
    config = {
        "parent_pid": os.getpid(),
        "work": work,
        "uid": uid,
        "python": interpreter,
        "expose": _interpreter_paths(interpreter),
        "timeout_s": timeout_s,
        "memory_bytes": int(memory_mb) << 20,
        "max_processes": int(max_processes),
        "max_file_bytes": int(max_file_mb) << 20,
        "run_id": secrets.token_hex(6),
        "use_namespaces": use_namespaces,
        "module_name": module_name,
    }
    out_path, err_path, status_path = (os.path.join(base, n) for n in ("stdout", "stderr", "status"))
    with (
        open(out_path, "wb", opener=_private_opener) as out,
        open(err_path, "wb", opener=_private_opener) as err,
        open(status_path, "wb", opener=_private_opener) as status,
    ):
        config["status_fd"] = status.fileno()
        marker = f"{PROCESS_MARKER}-{config['run_id']}"
        command = [sys.executable, "-I", "-S", os.path.abspath(__file__), "--bootstrap", json.dumps(config), marker]
        start = time.monotonic()
        try:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                pass_fds=(status.fileno(),),
                cwd=work,
                env=_child_env(work),
                start_new_session=True,
            )
        except OSError as exc:
            raise SandboxUnavailable(f"could not start the sandbox bootstrap: {exc}") from exc
        timed_out = False
        try:
            proc.wait(timeout=timeout_s + _STARTUP_GRACE_S)
        except subprocess.TimeoutExpired:
            timed_out = True
            _stop(proc, _read_status(status_path))
        _killpg(proc.pid)
        duration = time.monotonic() - start
    report = _read_status(status_path)
    layers = tuple(report.get("layers", ()))
    if uid is not None and (timed_out or "pid_namespace" not in layers):
        _kill_uid(uid)
    stdout = _read_truncated(out_path, max_output_bytes)
    stderr = _read_truncated(err_path, max_output_bytes)
    if report.get("error"):
        raise SandboxUnavailable(f"sandbox setup failed: {report['error']}")
    if not report.get("started"):
        raise SandboxUnavailable(f"sandbox bootstrap exited ({proc.returncode}) before starting: {stderr[-2000:]}")
    # The program's own CPU time reached RLIMIT_CPU: SIGXCPU, or SIGKILL at the hard limit for a PID-namespace
    # init, which the kernel does not let ignore-by-default signals like SIGXCPU kill.
    cpu_limit = _cpu_limit(timeout_s)
    if proc.returncode in (-signal.SIGKILL, -signal.SIGXCPU) and float(report.get("cpu_s", 0)) >= cpu_limit - 0.05:
        timed_out = True
    return _result(proc.returncode, timed_out, stdout, stderr, duration, layers, str(config["run_id"]))


def _cpu_limit(timeout_s: float) -> int:
    """RLIMIT_CPU soft limit (whole seconds): the next second above the wall limit, plus one."""
    return math.ceil(float(timeout_s)) + 1


def _result(
    returncode: int | None,
    timed_out: bool,
    stdout: str,
    stderr: str,
    duration: float,
    layers: tuple[str, ...],
    run_id: str,
) -> SandboxResult:
    kind: ErrorKind | None
    if returncode == -signal.SIGXCPU:
        timed_out = True
    tail = [line.strip() for line in stderr.strip().splitlines()[-3:]]
    if timed_out:
        kind = "timeout"
    elif returncode == 0:
        kind = None
    elif returncode == _SYNTAX_EXIT and any(line.startswith(_COMPILE_ERRORS) for line in tail):
        kind = "syntax"
    elif any(line.startswith("MemoryError") for line in tail):
        kind = "memory"
    elif returncode is not None and returncode < 0:
        kind = "killed"
    else:
        kind = "exception"
    passed = kind is None
    return SandboxResult(passed, returncode, timed_out, stdout, stderr, kind, round(duration, 3), layers, run_id)


def _stop(proc: subprocess.Popen[bytes], report: dict[str, Any]) -> None:
    """Kill a run that overran. Killing the program (init of its PID namespace) first makes the kernel take the
    whole namespace down before the bootstrap, which waits for it, exits."""
    child = report.get("child_pid")
    if isinstance(child, int) and proc.poll() is None:
        try:
            os.kill(child, signal.SIGKILL)
        except OSError:
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    _killpg(proc.pid)
    proc.wait()


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass


def _kill_uid(uid: int) -> None:
    """SIGKILL every process of the sandbox uid (kill(-1) from a helper running as that uid: one atomic sweep,
    which also catches processes that left the process group)."""
    try:
        subprocess.run(
            [sys.executable, "-I", "-S", os.path.abspath(__file__), "--kill-uid", str(uid)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={"PATH": _CHILD_PATH},
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        pass


def _read_status(path: str) -> dict[str, Any]:
    report: dict[str, Any] = {}
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    report.update(json.loads(line))
                except ValueError:
                    pass
    except OSError:
        pass
    return report


def _read_truncated(path: str, limit: int) -> str:
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            data = f.read(limit)
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    if size > limit:
        text += f"\n[... {size - limit} more bytes truncated]"
    return text


def _private_opener(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)


def _child_env(work: str) -> dict[str, str]:
    return {"PATH": _CHILD_PATH, "LANG": "C.UTF-8", "HOME": work, "TMPDIR": work}


def _remove_tree(path: str) -> None:
    def make_writable(func: Any, target: str, _exc: Any) -> None:
        try:
            os.chmod(os.path.dirname(target), 0o700)
            os.chmod(target, 0o700)
            func(target)
        except OSError:
            pass

    shutil.rmtree(path, onerror=make_writable)


def _pick_uid() -> int:
    """A random uid that no user owns, inside the uid range this (possibly namespaced) container maps."""
    ranges: list[tuple[int, int]] = []
    try:
        with open("/proc/self/uid_map", encoding="ascii") as f:
            for line in f:
                inside, _outside, count = (int(x) for x in line.split())
                ranges.append((inside, inside + count))
    except (OSError, ValueError):
        ranges = [(0, 1 << 32)]
    lo, hi = SANDBOX_UID_FIRST, SANDBOX_UID_FIRST + SANDBOX_UID_COUNT
    for start, end in ranges:
        if start <= lo and hi <= end:
            return lo + secrets.randbelow(hi - lo)
    taken = _passwd_uids()
    for start, end in ranges:
        if start <= 40_000 and 60_000 <= end:
            for _ in range(100):
                uid = 40_000 + secrets.randbelow(20_000)
                if uid not in taken:
                    return uid
    raise SandboxUnavailable(f"no unused uid range is mapped in this container (uid_map: {ranges})")


def _passwd_uids() -> set[int]:
    try:
        import pwd

        return {entry.pw_uid for entry in pwd.getpwall()}
    except Exception:  # noqa: BLE001 -- best effort
        return set()


def _interpreter_paths(interpreter: str) -> list[str]:
    """Directories the sandboxed interpreter must be able to read: its installation and, for our own
    interpreter, the virtualenv and base prefixes."""
    real = os.path.realpath(interpreter)
    paths = {os.path.dirname(os.path.dirname(real))}
    if os.path.realpath(interpreter) == os.path.realpath(sys.executable):
        paths |= {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    return sorted(os.path.realpath(p) for p in paths)


# ---------------------------------------------------------------------------------------------------------------
# Bootstrap side (this file run as a script, as the caller's user, before the program starts)
# ---------------------------------------------------------------------------------------------------------------

_RUNNER = r"""
import sys
if sys.argv[2] == "block-network":
    import socket as _socket

    def _refuse(*args, **kwargs):
        raise PermissionError("network access is disabled in the sandbox")

    class _NoSocket(_socket.socket):
        def __init__(self, *args, **kwargs):
            _refuse()

    _socket.socket = _NoSocket
    _socket.create_connection = _refuse
    _socket.socketpair = _refuse
    del _socket, _refuse, _NoSocket
with open("solution.py", "rb") as _f:
    _source = _f.read()
try:
    _code = compile(_source, "solution.py", "exec")
except (SyntaxError, ValueError) as _exc:
    import traceback
    sys.stderr.write("".join(traceback.format_exception_only(type(_exc), _exc)))
    sys.exit(86)
import types
_main = types.ModuleType(sys.argv[3])
_main.__file__ = "solution.py"
sys.modules[sys.argv[3]] = _main
sys.argv = ["solution.py"]
del _f, _source, types
exec(_code, _main.__dict__)
"""


class _Libc:
    """The few libc calls Python 3.11 lacks (unshare, mount, prctl, mount_setattr)."""

    def __init__(self) -> None:
        import ctypes

        self.ctypes = ctypes
        self.lib = ctypes.CDLL(None, use_errno=True)

    def _check(self, rc: int, what: str) -> None:
        if rc != 0:
            errno = self.ctypes.get_errno()
            raise OSError(errno, f"{what}: {os.strerror(errno)}")

    def unshare(self, flags: int) -> None:
        self._check(self.lib.unshare(self.ctypes.c_int(flags)), "unshare")

    def mount(self, source: str | None, target: str, fstype: str | None, flags: int, data: str | None) -> None:
        c = self.ctypes
        enc = (lambda s: None if s is None else s.encode())  # noqa: E731
        rc = self.lib.mount(enc(source), enc(target), enc(fstype), c.c_ulong(flags), enc(data))
        self._check(rc, f"mount {target}")

    def prctl(self, option: int, value: int) -> None:
        c = self.ctypes
        self._check(self.lib.prctl(c.c_int(option), c.c_ulong(value), c.c_ulong(0), c.c_ulong(0), c.c_ulong(0)),
                    "prctl")

    def readonly_recursive(self, path: str) -> None:
        c = self.ctypes

        class MountAttr(c.Structure):
            _fields_ = [("attr_set", c.c_uint64), ("attr_clr", c.c_uint64), ("propagation", c.c_uint64),
                        ("userns_fd", c.c_uint64)]

        attr = MountAttr(_MOUNT_ATTR_RDONLY, 0, 0, 0)
        self.lib.syscall.restype = c.c_long
        rc = self.lib.syscall(c.c_long(_SYS_MOUNT_SETATTR), c.c_int(_AT_FDCWD), path.encode(),
                              c.c_uint(_AT_RECURSIVE), c.byref(attr), c.c_size_t(c.sizeof(attr)))
        self._check(int(rc), "mount_setattr")


def _bootstrap(config: dict[str, Any]) -> NoReturn:
    status_fd = int(config["status_fd"])
    os.set_inheritable(status_fd, False)

    def report(**fields: Any) -> None:
        os.write(status_fd, (json.dumps(fields) + "\n").encode())

    try:
        libc = _Libc()
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # the trainer died: take the run down with it
        if os.getppid() != config["parent_pid"]:
            os._exit(_SETUP_EXIT)
        layers, in_namespaces, run_uid = _enter_namespaces(libc, config)
        work = config["work"]
        if in_namespaces:
            layers += _isolate_filesystem(libc, config, run_uid)
    except Exception as exc:  # noqa: BLE001 -- reported to the parent, which raises SandboxUnavailable
        report(error=f"{type(exc).__name__}: {exc}")
        os._exit(_SETUP_EXIT)
    read_end, write_end = os.pipe()  # close-on-exec: EOF tells us the program's exec succeeded
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            _become_program(libc, config, in_namespaces, work)
        except BaseException as exc:  # noqa: BLE001
            os.write(write_end, f"{type(exc).__name__}: {exc}".encode())
        os._exit(_SETUP_EXIT)
    os.close(write_end)
    failure = b""
    while chunk := os.read(read_end, 4096):
        failure += chunk
    os.close(read_end)
    if failure:
        report(error=failure.decode(errors="replace"), layers=layers)
    else:
        child_layers = ["rlimits", "process_group"] + (["uid"] if config["uid"] is not None else [])
        if not in_namespaces:
            child_layers.append("socket_patch")
        report(started=True, child_pid=pid, layers=layers + child_layers)
    _, status, usage = os.wait4(pid, 0)
    report(cpu_s=round(usage.ru_utime + usage.ru_stime, 3))
    if os.WIFEXITED(status):
        os._exit(_SETUP_EXIT if failure else os.WEXITSTATUS(status))
    sig = os.WTERMSIG(status)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if sig not in (signal.SIGKILL, signal.SIGSTOP):
        signal.signal(sig, signal.SIG_DFL)
    os.kill(os.getpid(), sig)  # die the same way, so the parent sees -sig
    os._exit(128 + sig)


def _enter_namespaces(libc: _Libc, config: dict[str, Any]) -> tuple[list[str], bool, int | None]:
    """New mount, network and PID namespaces (through a user namespace when not root). Returns the layers, whether
    namespaces are active, and the uid the program will run as inside them."""
    flags = _CLONE_NEWNS | _CLONE_NEWNET | _CLONE_NEWPID
    if not config["use_namespaces"]:
        return [], False, config["uid"]
    if os.geteuid() == 0:
        try:
            libc.unshare(flags)
        except OSError:
            return [], False, config["uid"]
        return ["net_namespace", "pid_namespace"], True, config["uid"]
    outer_uid, outer_gid = os.getuid(), os.getgid()
    try:
        libc.unshare(flags | _CLONE_NEWUSER)
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")
        with open("/proc/self/uid_map", "w") as f:
            f.write(f"{_USERNS_UID} {outer_uid} 1")
        with open("/proc/self/gid_map", "w") as f:
            f.write(f"{_USERNS_UID} {outer_gid} 1")
    except OSError:
        return [], False, None
    return ["user_namespace", "net_namespace", "pid_namespace"], True, _USERNS_UID


def _isolate_filesystem(libc: _Libc, config: dict[str, Any], run_uid: int | None) -> list[str]:
    """Private mounts: hide what the program must not see, make everything read-only, give it a tmpfs workdir."""
    layers: list[str] = []
    work = config["work"]
    # Without this, mounts made here would propagate back to the host's shared mounts.
    libc.mount(None, "/", None, _MS_REC | _MS_PRIVATE, None)
    layers.append("mount_namespace")
    with open(os.path.join(work, "solution.py"), "rb") as f:
        source = f.read()
    if config["uid"] is not None:
        layers += _expose_interpreter(libc, config["expose"])
    try:
        libc.readonly_recursive("/")
        layers.append("readonly_root")
    except OSError:
        for directory in _WORLD_WRITABLE:
            if os.path.isdir(directory) and not os.path.islink(directory):
                _cover_readonly(libc, directory, keep=work)
        layers.append("readonly_tmp")
    owner = run_uid if run_uid is not None else os.getuid()
    size_kb = max(4 * (int(config["max_file_bytes"]) >> 10), 1024)
    libc.mount("tmpfs", work, "tmpfs", _MS_NOSUID | _MS_NODEV,
               f"size={size_kb}k,nr_inodes=4096,mode=0700,uid={owner},gid={owner}")
    path = os.path.join(work, "solution.py")
    with open(path, "wb") as f:
        f.write(source)
    if config["uid"] is not None:
        os.chown(path, owner, owner)
    layers.append("tmpfs_workdir")
    return layers


def _cover_readonly(libc: _Libc, directory: str, keep: str) -> None:
    """Mount an empty read-only tmpfs over `directory`, recreating `keep` inside it as an empty mountpoint."""
    libc.mount("tmpfs", directory, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=64k,mode=0755")
    if keep.startswith(directory.rstrip("/") + "/"):
        os.makedirs(keep, mode=0o755, exist_ok=True)
    libc.mount(None, directory, None, _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV, None)


def _expose_interpreter(libc: _Libc, paths: list[str]) -> list[str]:
    """Let the sandbox uid reach the interpreter when it lives below a directory only root may enter (/root is
    0700): mask that directory with a tmpfs and bind just the interpreter's directories back into it. Everything
    else in it (credentials, caches) stays invisible."""
    layers = []
    paths = [p for p in paths if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in paths)]
    groups: dict[str, list[str]] = {}
    for path in paths:
        blocked = _first_closed_ancestor(path)
        if blocked is not None and blocked != "/":
            groups.setdefault(blocked, []).append(path)
    for blocked, inside in sorted(groups.items()):
        fds = [os.open(p, os.O_PATH | os.O_DIRECTORY) for p in inside]
        try:
            libc.mount("tmpfs", blocked, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=64k,mode=0755")
            for path, fd in zip(inside, fds):
                os.makedirs(path, mode=0o755, exist_ok=True)
                libc.mount(f"/proc/self/fd/{fd}", path, None, _MS_BIND | _MS_REC, None)
        finally:
            for fd in fds:
                os.close(fd)
        layers.append(f"masked:{blocked}")
    return layers


def _first_closed_ancestor(path: str) -> str | None:
    """The outermost directory on the way to `path` (inclusive) that others may not enter, if any."""
    parts = path.strip("/").split("/")
    for i in range(len(parts) + 1):
        current = "/" + "/".join(parts[:i])
        try:
            if not os.stat(current).st_mode & 0o001:
                return current
        except OSError:
            return None
    return None


def _become_program(libc: _Libc, config: dict[str, Any], in_namespaces: bool, work: str) -> NoReturn:
    """In the forked child (init of the new PID namespace): last setup, drop privileges, exec the program."""
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if in_namespaces:
        try:
            libc.mount("proc", "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, None)
        except OSError:
            pass  # the host /proc stays; other uids' details are still protected by their owners' permissions
    cpu = _cpu_limit(config["timeout_s"])
    limits = {
        resource.RLIMIT_CPU: (cpu, cpu + 1),
        resource.RLIMIT_AS: (config["memory_bytes"],) * 2,
        resource.RLIMIT_NPROC: (config["max_processes"],) * 2,
        resource.RLIMIT_FSIZE: (config["max_file_bytes"],) * 2,
        resource.RLIMIT_CORE: (0, 0),
        resource.RLIMIT_NOFILE: (256, 256),
    }
    for which, value in limits.items():
        resource.setrlimit(which, value)
    uid = config["uid"]
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
        if os.getuid() != uid or os.geteuid() != uid:
            raise OSError("could not drop privileges")
    libc.prctl(_PR_SET_NO_NEW_PRIVS, 1)
    os.chdir(work)
    os.umask(0o077)
    python = config["python"]
    argv = [python, "-I", "-c", _RUNNER, f"{PROCESS_MARKER}-{config['run_id']}",
            "allow-network" if in_namespaces else "block-network", config["module_name"]]
    os.execve(python, argv, _child_env(work))


def _kill_all_of_uid(uid: int) -> None:
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        pass


if __name__ == "__main__":
    if sys.argv[1:2] == ["--bootstrap"]:
        _bootstrap(json.loads(sys.argv[2]))
    elif sys.argv[1:2] == ["--kill-uid"]:
        _kill_all_of_uid(int(sys.argv[2]))
