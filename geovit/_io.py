"""Atomic file writes: nothing geovit writes is ever left half-written.

Every writer goes through :func:`atomic_path`: the data go to a temporary file in the target's
folder, which is renamed onto the target only once the writer has finished. The finished file
gets the permissions a plain ``open(path, "w")`` would give it: an existing target keeps its
permission bits, a new one gets ``0o666 & ~umask`` (``0644`` under the usual umask ``022``).
Folders that have to be created get ``0o777 & ~umask``, as ``mkdir`` gives them. A writer killed
before the rename leaves its temporary file behind; the next write of the same target removes it
(:func:`remove_stale_temps`).
"""
from __future__ import annotations

import contextlib
import glob
import os
import socket
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's file-mode creation mask, read without changing it where possible.

    Linux reports it in ``/proc/self/status`` (line ``Umask:``). Elsewhere the mask is read by
    setting and restoring it (``os.umask`` can only be read that way), under a lock so that
    geovit's own threads never see the temporary value.

    Returns:
        The umask, e.g. ``0o022``.
    """
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status", encoding="ascii", errors="replace") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def _final_mode(path: Path) -> int:
    """Permission bits ``open(path, "w")`` would leave on ``path``."""
    with contextlib.suppress(OSError):
        st = os.stat(path)
        if stat.S_ISREG(st.st_mode):
            return stat.S_IMODE(st.st_mode)
    return 0o666 & ~current_umask()


_HOST = socket.gethostname().split(".")[0] or "host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Delete temporary files of ``path`` left by writers that were killed (e.g. ``kill -9``).

    A temporary file is named ``.<name>.<host>.<pid>.<random><suffix>``; it is stale when its
    host is this machine and no process ``pid`` is running. Temporary files of live writers and
    of other machines (a shared file system) are left alone.

    Args:
        path: the target file whose leftovers to remove.

    Returns:
        The files removed.
    """
    path = Path(path)
    removed = []
    with contextlib.suppress(OSError):
        for tmp in path.parent.glob(f".{glob.escape(path.name)}.{glob.escape(_HOST)}.*"):
            pid = tmp.name[len(f".{path.name}.{_HOST}."):].split(".", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
                with contextlib.suppress(OSError):
                    tmp.unlink()
                    removed.append(tmp)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``.

    The temporary file is private (``0600``) while it is written; just before the rename it gets
    the permissions a plain ``open(path, "w")`` would give (see the module docstring). Missing
    parent folders are created with the umask's permissions.

    Args:
        path: the file to write.
        suffix: suffix of the temporary file; defaults to the target's suffix so that
            format-sniffing writers (rasterio, matplotlib, zarr) see the right extension.

    Yields:
        The temporary path to write to (it exists, empty).

    Raises:
        Whatever the body raises: the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.{_HOST}.{os.getpid()}.", suffix=path.suffix if suffix is None else suffix, dir=path.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, _final_mode(path))
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`).

    Args:
        path: the file to write.
        data: its new content.
    """
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` as UTF-8 to ``path`` atomically (see :func:`atomic_path`).

    Args:
        path: the file to write.
        text: its new content.
    """
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)``, atomically (see :func:`atomic_path`).

    Args:
        obj: what to save.
        path: the file to write.
    """
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def atomic_savefig(fig, path: str | os.PathLike, **kwargs) -> None:
    """``fig.savefig(path, **kwargs)``, atomically (see :func:`atomic_path`).

    Args:
        fig: a matplotlib figure.
        path: the image file to write (its suffix picks the format).
        **kwargs: passed to ``savefig`` (``dpi``, ...).
    """
    with atomic_path(path) as tmp:
        fig.savefig(tmp, **kwargs)
