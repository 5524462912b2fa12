"""The request cache: keyed by identity, messages, sampling and sample index; shared safely across processes."""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from collab.backends.cache import RequestCache, merge_shards, request_key
from collab.backends.filesystems import filesystem_type, is_network_filesystem
from collab.errors import CollabError
from collab.chat import Generation, SamplingParams

MESSAGES = [{"role": "user", "content": "hello"}]


def test_key_depends_on_everything_that_changes_a_sample() -> None:
    base = request_key("m@1", MESSAGES, SamplingParams(), 0)
    assert base == request_key("m@1", MESSAGES, SamplingParams(), 0)
    assert base == request_key("m@1", MESSAGES, SamplingParams(n=5), 0)  # n only counts samples
    for other in (
        request_key("m@2", MESSAGES, SamplingParams(), 0),
        request_key("m@1", [{"role": "user", "content": "hello!"}], SamplingParams(), 0),
        request_key("m@1", MESSAGES, SamplingParams(temperature=0.1), 0),
        request_key("m@1", MESSAGES, SamplingParams(seed=1), 0),
        request_key("m@1", MESSAGES, SamplingParams(), 1),
    ):
        assert other != base


def test_failures_are_never_cached(tmp_path: Path) -> None:
    cache = RequestCache(tmp_path / "c.db")
    cache.put_many({"a": Generation.failure("Timeout: 60 s"), "b": Generation("ok", 1, 1)})
    assert set(cache.get_many(["a", "b"])) == {"b"}
    assert (cache.hits, cache.misses) == (1, 1)


def _writer(path: str, worker: int) -> None:
    cache = RequestCache(path)
    for i in range(200):
        cache.put_many({f"{worker}-{i}": Generation(f"text {worker} {i}", 3, 4)})


def test_concurrent_processes_write_without_losing_entries(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    RequestCache(path)
    procs = [mp.get_context("spawn").Process(target=_writer, args=(path, w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    cache = RequestCache(path)
    assert len(cache) == 800
    assert cache.get_many(["3-199"])["3-199"].text == "text 3 199"


# --- network filesystems: one file per writer, merged after the stage -------------------------------------------

NFS_MOUNTS = """\
sysfs /sys sysfs rw,nosuid 0 0
/dev/nvme0n1p1 / ext4 rw,relatime 0 0
fs01:/export/home /shared nfs4 rw,vers=4.2,hard 0 0
10.0.0.5@o2ib:/scratch /lustre lustre rw,flock 0 0
/dev/nvme1n1 /shared/local\\040scratch xfs rw 0 0
"""


def test_filesystem_type_takes_the_longest_mount_point() -> None:
    assert filesystem_type("/shared/alice/runs/x/cache.sqlite", NFS_MOUNTS) == "nfs4"
    assert filesystem_type("/lustre/alice/run", NFS_MOUNTS) == "lustre"
    assert filesystem_type("/shared/local scratch/run", NFS_MOUNTS) == "xfs"  # a local disk mounted inside NFS
    assert filesystem_type("/sharedother/run", NFS_MOUNTS) == "ext4"  # a prefix of the name is not a parent
    assert is_network_filesystem("/lustre/alice/run", NFS_MOUNTS)
    assert not is_network_filesystem("/tmp/run", NFS_MOUNTS)


def test_this_machines_temp_dir_gets_the_shared_wal_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLLAB_CACHE_LAYOUT", raising=False)
    if is_network_filesystem(tmp_path):
        pytest.skip(f"{tmp_path} is on a network filesystem here")
    cache = RequestCache(tmp_path / "cache.sqlite")
    cache.put_many({"k": Generation("t", 1, 1)})
    assert cache.layout == "shared" and (tmp_path / "cache.sqlite-wal").exists()


def _rank_writer(path: str, env: dict[str, str], keys: list[str], seen: list[str]) -> None:
    """One process of a multi-node run: its rank and array task as Slurm and torchrun set them."""
    os.environ.update(env)
    cache = RequestCache(path)
    assert cache.layout == "per-writer"
    hits = cache.get_many(seen)
    assert set(hits) == set(seen), f"{env}: merged entries of the previous stage not seen"
    for key in keys:
        cache.put_many({key: Generation(f"text {key}", 3, 4)})
        assert cache.get_many([key])[key].text == f"text {key}"  # read-your-writes within the process


def test_processes_of_a_multi_node_run_write_their_own_files_then_merge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLLAB_CACHE_LAYOUT", "per-writer")  # what /proc/mounts gives on NFS or Lustre
    path = tmp_path / "run" / "cache.sqlite"
    ctx = mp.get_context("spawn")
    writers = [{"RANK": str(r), "SLURM_NODEID": str(r // 2)} for r in range(4)]  # 2 nodes x 2 ranks

    def stage(keys_of: Callable[[int], list[str]], seen: list[str]) -> None:
        procs = [ctx.Process(target=_rank_writer, args=(str(path), env, keys_of(i), seen))
                 for i, env in enumerate(writers)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
            assert p.exitcode == 0

    stage(lambda i: [f"a{i}-{j}" for j in range(100)], seen=[])
    files = sorted(p.name for p in (tmp_path / "run" / "cache.d").iterdir())
    assert files == ["rank0.sqlite", "rank1.sqlite", "rank2.sqlite", "rank3.sqlite"]  # one writer per file, no WAL
    assert merge_shards(path) == 400
    assert not list((tmp_path / "run" / "cache.d").glob("*.sqlite"))
    assert not Path(f"{path}-wal").exists()

    # The next stage (or a requeued job) reads everything through the shared file and writes its own again.
    stage(lambda i: [f"b{i}-{j}" for j in range(50)], seen=["a0-0", "a3-99"])
    assert merge_shards(path) == 200
    cache = RequestCache(path)
    assert len(cache) == 600 and cache.get_many(["b2-49"])["b2-49"].text == "text b2-49"


def test_unknown_cache_layout_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLLAB_CACHE_LAYOUT", "nfs")
    with pytest.raises(CollabError, match="COLLAB_CACHE_LAYOUT='nfs' is not a cache layout"):
        RequestCache(tmp_path / "cache.sqlite")
