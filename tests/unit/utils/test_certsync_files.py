"""Files certsync reads and writes (salt://_utils/certsync_files.py)."""

import json
import multiprocessing
import os
import pathlib
import stat
import threading
import time

import pytest
from salt.exceptions import CommandExecutionError

from harness.loader import UTILS

replace_file = UTILS["certsync_files.replace_file"]
write_temp = UTILS["certsync_files.write_temp"]
locked = UTILS["certsync_files.locked"]


def test_replace_file_is_private_by_default_and_leaves_no_temp(tmp_path):
    path = tmp_path / "record.json"
    path.write_text("old")
    replace_file(str(path), b"new")
    assert path.read_bytes() == b"new"
    assert path.stat().st_mode & 0o777 == 0o600
    replace_file(str(path), b"shared", 0o644)
    assert path.stat().st_mode & 0o777 == 0o644
    assert sorted(os.listdir(tmp_path)) == ["record.json"]


def test_a_symlink_planted_at_the_temp_name_is_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    planted = tmp_path / f".key.pem.certsync-{os.getpid()}"
    planted.symlink_to(victim)
    temp = write_temp(str(tmp_path), "key.pem", b"secret", 0o600)
    assert victim.read_text() == "untouched"
    assert not os.path.islink(temp) and open(temp, "rb").read() == b"secret"  # noqa: SIM115


def test_a_missing_directory_is_an_error_not_a_partial_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        replace_file(str(tmp_path / "gone" / "x"), b"data")
    assert os.listdir(tmp_path) == []


def test_the_lock_is_exclusive_and_a_waiter_gives_up_naming_the_file(tmp_path):
    path = str(tmp_path / ".certsync.lock")
    taken, release = threading.Event(), threading.Event()

    def hold():
        with locked(path, 5):
            taken.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert taken.wait(5)
        with pytest.raises(CommandExecutionError) as error, locked(path, 0.2, "the test"):
            pass
        assert str(error.value) == f"{path}: the test held the lock for 0.2 s"
    finally:
        release.set()
        holder.join(10)
    with locked(path, 1):  # free again
        assert oct(os.stat(path).st_mode & 0o777) == "0o600"


def test_a_waiter_gets_the_lock_once_it_is_let_go(tmp_path):
    path = str(tmp_path / ".certsync.lock")
    order = []

    def hold():
        with locked(path, 5):
            order.append("first")
            time.sleep(0.3)

    holder = threading.Thread(target=hold)
    holder.start()
    time.sleep(0.1)
    with locked(path, 5):
        order.append("second")
    holder.join(10)
    assert order == ["first", "second"]


def test_a_symlink_at_the_lock_path_is_refused(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("")
    (tmp_path / "lock").symlink_to(target)
    with (
        pytest.raises(CommandExecutionError, match="cannot open the lock"),
        locked(str(tmp_path / "lock"), 1),
    ):
        pass


append_rotated = UTILS["certsync_files.append_rotated"]


def _writer(path, tag, count, size, max_bytes):
    line = json.dumps({"writer": tag, "pad": "x" * size})
    for number in range(count):
        append_rotated(path, line[:-1] + f', "n": {number}}}\n', max_bytes)


def test_concurrent_writers_never_interleave_and_rotation_keeps_the_last_file(tmp_path):
    """Four processes append 200 lines of ~3 KB each, rotating at 256 KB: every line of
    both files parses, and each writer's lines are whole and in order."""
    path = str(tmp_path / "events.json")
    context = multiprocessing.get_context("fork")
    writers = [
        context.Process(target=_writer, args=(path, tag, 200, 3000, 256 * 1024)) for tag in range(4)
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(60)
        assert writer.exitcode == 0
    rotated, current = pathlib.Path(f"{path}.1"), pathlib.Path(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "events.json",
        "events.json.1",
        "events.json.lock",
    ]
    assert rotated.stat().st_size >= 256 * 1024
    assert current.stat().st_size < 256 * 1024 + 3100
    for kept in (rotated, current):
        lines = [json.loads(line) for line in kept.read_text().splitlines()]
        for tag in range(4):
            numbers = [line["n"] for line in lines if line["writer"] == tag]
            assert numbers == sorted(numbers)
    assert stat.S_IMODE(current.stat().st_mode) == 0o640


def test_an_event_log_is_never_written_through_a_symlink(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    (tmp_path / "events.json").symlink_to(victim)
    with pytest.raises(CommandExecutionError, match="cannot append"):
        append_rotated(str(tmp_path / "events.json"), "{}\n", 1024)
    assert victim.read_text() == "untouched"


def test_a_missing_directory_is_named(tmp_path):
    with pytest.raises(CommandExecutionError, match=r"its directory .*/nowhere does not exist"):
        append_rotated(str(tmp_path / "nowhere" / "events.json"), "{}\n", 1024)


@pytest.mark.parametrize("planted", ["events.json", "events.json.lock"])
def test_a_fifo_at_the_event_log_is_refused_at_once(tmp_path, planted):
    """A FIFO at the configured path (or its lock) is named, not waited on: with no
    reader, opening it to write would block every deploy and alert."""
    os.mkfifo(tmp_path / planted)
    raised = []

    def append():
        try:
            append_rotated(str(tmp_path / "events.json"), "{}\n", 1024)
        except CommandExecutionError as exc:
            raised.append(str(exc))

    writer = threading.Thread(target=append, daemon=True)  # a blocked open never returns
    writer.start()
    writer.join(30)
    assert not writer.is_alive(), "the append is blocked on the FIFO"
    assert raised and "not a regular file" in raised[0]


def test_a_fifo_with_a_reader_is_refused_too(tmp_path):
    path = tmp_path / "events.json"
    os.mkfifo(path)
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        with pytest.raises(CommandExecutionError, match="not a regular file"):
            append_rotated(str(path), "{}\n", 1024)
        assert os.read(reader, 10) == b""  # nothing was written into it
    finally:
        os.close(reader)


def test_a_directory_at_the_event_log_is_refused(tmp_path):
    (tmp_path / "events.json").mkdir()
    with pytest.raises(CommandExecutionError, match="not a regular file"):
        append_rotated(str(tmp_path / "events.json"), "{}\n", 1024)
