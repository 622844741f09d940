"""Replacing a checkpoint directory atomically, and cleaning up after a save that was killed.

A save writes the new directory as a hidden sibling `.NAME.tmp-XXXX`, flushes it, then swaps it
in with two renames (NAME -> .NAME.old, .NAME.tmp-XXXX -> NAME) and deletes .NAME.old. At every
instant NAME or .NAME.old is a complete checkpoint. What a kill -9 can leave behind, an
unfinished .NAME.tmp-XXXX, a .NAME.old beside NAME or instead of it, is what
recover_interrupted_saves() repairs; a failure the process survives (disk full, file-size limit)
is cleaned up at once and reported by failure_message() in one sentence.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from pathlib import Path

from lstmkit.training.checkpoint_verify import MANIFEST, cap


def finish_files(d: Path) -> None:
    """Flush every file to disk and give the directory and files the usual permissions
    (mkdtemp makes 0700 and safetensors writes 0600; a checkpoint is meant to be shared)."""
    umask = os.umask(0)
    os.umask(umask)
    for p in d.iterdir():
        os.chmod(p, 0o666 & ~umask)
        with open(p, "rb") as f:
            os.fsync(f.fileno())
    os.chmod(d, 0o777 & ~umask)


def fsync_dir(d: Path) -> None:
    """Make the renames themselves durable (POSIX: fsync the directory that holds them)."""
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open directories; the renames are still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def old_path(path: Path) -> Path:
    return path.parent / f".{path.name}.old"


def failure_message(path: Path, e: BaseException) -> str:
    """One sentence for a failed write: what happened (by errno), what is left, what to do."""
    code = getattr(e, "errno", None)
    if code is None:  # SafetensorError: "... I/O error: No space left on device (os error 28)"
        m = re.search(r"os error (\d+)", str(e))
        code = int(m.group(1)) if m else None
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        what, todo = "disk full", "Free some space (or write elsewhere) and run again"
    elif code == errno.EFBIG:
        what = "file-size limit reached (ulimit -f)"
        todo = "Raise the limit (or write elsewhere) and run again"
    else:
        reason = getattr(e, "strerror", None) or str(e)
        what, todo = f"write failed ({cap(reason, 120)})", "Fix the cause and run again"
    if path.is_dir() and (path / MANIFEST).is_file():
        kept = "the previous checkpoint is intact"
    elif (old_path(path) / MANIFEST).is_file():
        kept = f"the previous checkpoint is intact in {old_path(path)}"
    else:
        kept = "nothing was written there"
    return f"{what} while saving {path}; {kept}. {todo}"


def swap(tmp: Path, path: Path) -> None:
    """At every instant either `path` or `.path.old` is a complete checkpoint; a failure (or an
    interrupt) between the renames puts the previous one back."""
    old = old_path(path)
    try:
        if os.path.lexists(path):
            if os.path.lexists(old):
                _remove(old)
            os.replace(path, old)
        os.replace(tmp, path)
    except BaseException:
        if not path.exists() and old.exists():
            # if this fails too, load_checkpoint and recover_interrupted_saves find .NAME.old
            with contextlib.suppress(OSError):
                os.replace(old, path)
        raise
    fsync_dir(path.parent)
    with contextlib.suppress(OSError):
        _remove(old)


def _remove(p: Path) -> None:
    """Remove a directory tree, or a file or link that stands where one was (e.g. a `best` that
    a user replaced by a file): shutil.rmtree refuses those."""
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    else:
        p.unlink()


_TMP_DIR = re.compile(r"\.(?P<name>.+)\.tmp-[A-Za-z0-9_]+")
_OLD_DIR = re.compile(r"\.(?P<name>.+)\.old")


def recover_interrupted_saves(directory: str | os.PathLike) -> list[str]:
    """Undo what a save killed midway (kill -9, power loss) leaves in `directory`: remove the
    unfinished `.NAME.tmp-*` copies, and put `.NAME.old` back as NAME when NAME is missing (a
    crash between the two renames), or remove it when NAME is complete. Returns one sentence per
    action (empty: nothing to do). Call it only while no other process saves into `directory`:
    a save in progress is an unfinished copy too."""
    d = Path(directory)
    if not d.is_dir():
        return []
    done = []
    for p in sorted(d.iterdir()):
        if _TMP_DIR.fullmatch(p.name) and p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
            done.append(f"removed {p}, the unfinished copy of an interrupted save")
    for p in sorted(d.iterdir()):
        m = _OLD_DIR.fullmatch(p.name)
        if not m or not p.is_dir() or p.is_symlink():
            continue
        target = d / m.group("name")
        if not os.path.lexists(target) and (p / MANIFEST).is_file():
            os.replace(p, target)
            done.append(
                f"restored {target} from {p.name} (a save was interrupted between its renames)"
            )
        elif target.is_dir() and (target / MANIFEST).is_file():
            shutil.rmtree(p)
            done.append(f"removed {p}, the previous copy of {target} left by an interrupted save")
        else:
            done.append(f"left {p} alone: {target} is not a complete checkpoint; look at both")
    if done:
        fsync_dir(d)
    return done
