"""Which filesystem a path lives on, from /proc/mounts: SQLite's WAL mode is only safe on a local one.

WAL keeps its index in a shared-memory file that every process maps; processes on different hosts of an NFS,
Lustre or GPFS mount do not share that memory, and their POSIX locks go through a network lock manager that is
unreliable under load ("database is locked", "disk I/O error", or silent corruption).
"""

from __future__ import annotations

import os
from pathlib import Path

# Filesystem types whose files several hosts can open at once. fuse.* covers sshfs, ceph-fuse, gcsfuse, s3fs, ...
NETWORK_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "lustre", "gpfs", "beegfs", "cifs", "smb3", "smbfs", "ceph", "glusterfs", "panfs", "wekafs",
    "orangefs", "pvfs2", "9p", "afs", "ocfs2", "gfs2", "virtiofs", "davfs",
})


def _unescape(field: str) -> str:
    """/proc/mounts writes space, tab, newline and backslash in paths as octal escapes (\\040 ...)."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def filesystem_type(path: str | Path, mounts: str | None = None) -> str:
    """The type of the filesystem that holds `path` (the mount with the longest matching mount point)."""
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "unknown"  # not Linux: treated as local, as SQLite itself does
    target = os.path.abspath(os.path.realpath(path))
    best, best_type = "", "unknown"
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point, kind = _unescape(fields[1]), fields[2]
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, best_type = point, kind
    return best_type


def is_network_filesystem(path: str | Path, mounts: str | None = None) -> bool:
    kind = filesystem_type(path, mounts)
    return kind in NETWORK_FILESYSTEMS or kind.startswith("fuse.") or kind.split(".")[0] in NETWORK_FILESYSTEMS
