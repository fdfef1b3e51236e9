"""Reading and writing the files of a run directory, safely.

A run directory may come from someone else, so everything in it is data: JSON is parsed as JSON,
``.pt`` files are loaded with ``torch.load(weights_only=True)`` (tensors, numbers, strings and containers
only; a pickle that would run code is refused), and every unreadable file raises ``ValueError`` naming it
and saying what to do.  Every file hddgeo writes goes through :func:`write_file`: a temporary file
created exclusively and without following links replaces the target, so a kill mid-write leaves the
previous version intact and a planted link is never written through.  :class:`RunLock` makes one process
the owner of a run directory.

Files (``docs/design.md`` describes what each holds):

    config.json    the run's DistillConfig
    log.csv        one row per iteration
    checkpoint.pt  synthetic images, optimiser and method state, log rows, the config they belong to
    synset.pt      the final synthetic set
    metrics.json   final evaluation and timing
    run.lock       the owner's pid, while a process runs in the directory
"""
from __future__ import annotations

import csv
import errno
import fcntl
import re
import json
import os
import pickle
import secrets
import stat
import zipfile
from typing import Callable

import numpy as np
import torch

from .errors import RunDirBusy, RunDirError  # noqa: F401  (RunDirBusy: raised here, importable from here)

CONFIG, LOG, CHECKPOINT, SYNSET, METRICS = "config.json", "log.csv", "checkpoint.pt", "synset.pt", "metrics.json"
LOCK = "run.lock"  # present while a process owns the directory (and after a kill, unlocked)
# flock's answers on a file system without locks (ENOSYS: Lustre mounted without -o flock; EOPNOTSUPP: some NFS)
NO_LOCKS = {errno.ENOSYS, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)}


class RunLock:
    """Ownership of a run directory by this process: an advisory ``fcntl.flock`` on ``run.lock``, whose
    content is the holder's pid.  The kernel drops the lock when the holder dies, so a lock file left by a
    killed process blocks nothing; :meth:`release` removes the file while still holding the lock."""

    def __init__(self, run_dir: str):
        self.path, self.fd = os.path.join(run_dir, LOCK), None
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        for _ in range(100):
            try:
                fd = os.open(self.path, flags, 0o666)
            except OSError as err:
                if os.path.islink(self.path):  # a planted link: removed, never followed
                    os.unlink(self.path)
                    continue
                raise RunDirError(f"cannot lock the run directory {run_dir}: {err.strerror or err}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                if err.errno in NO_LOCKS:  # a shared file system mounted without flock (Lustre's default)
                    os.close(fd)
                    raise RunDirError(f"cannot lock the run directory {run_dir}: its file system has no file locks "
                                     f"({os.strerror(err.errno)}); use a folder on a file system with locks (a local "
                                     f"disk, or mount with -o flock)") from None
                if not isinstance(err, BlockingIOError):
                    os.close(fd)
                    raise RunDirError(f"cannot lock the run directory {run_dir}: {err.strerror or err}") from None
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
                os.close(fd)
                raise RunDirBusy(f"{run_dir} is in use by process {holder if holder.isdigit() else '(pid not yet written)'} "
                                 f"(a distill, --resume or study cell owns it); wait for it to end or choose another "
                                 f"folder") from None
            try:  # the previous holder may have removed the file between our open and our lock: lock the one there
                same = os.path.samestat(os.fstat(fd), os.lstat(self.path))
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            self.fd = fd
            return
        raise RunDirBusy(f"cannot lock the run directory {run_dir}: its lock file keeps changing")

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            if os.path.samestat(os.fstat(self.fd), os.lstat(self.path)):
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        finally:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def remove_temporaries(run_dir: str) -> None:
    """Delete what interrupted writes (or a planter) left under temporary names in ``run_dir``: files and links
    themselves, never what a link points to.  Called with the directory's lock held."""
    for name in os.listdir(run_dir):
        path = os.path.join(run_dir, name)
        if is_temporary(name) and (os.path.islink(path) or os.path.isfile(path)):
            os.unlink(path)


def _open_temporary(path: str):
    """``(fd, name)`` of a new temporary file beside ``path``, created exclusively (``O_EXCL``) and without
    following links (``O_NOFOLLOW``): whatever was planted under any name in the folder, a file, a link or a
    link named like a temporary file, is never opened, written through or renamed over ``path``."""
    folder, base = os.path.split(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        name = os.path.join(folder, f"{base}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            return os.open(name, flags, 0o666), name
        except FileExistsError:
            continue
    raise OSError(f"cannot create a temporary file beside {path}: 100 names taken")


def write_file(path: str, write: Callable, binary: bool = False) -> str:
    """The one writer of every file hddgeo writes: ``write(fh)`` fills a temporary file (see
    :func:`_open_temporary`) that then replaces ``path`` with ``os.replace``.  A kill mid-write leaves the
    previous version intact; a link planted under ``path`` is replaced, never followed; on any error the
    temporary file is removed.  The file's data reach the disk (``fsync``) before the rename, and the rename
    itself (the folder's ``fsync``) before this returns, so a crash of the machine leaves either the previous
    version or the whole new one under ``path``, never a truncated file.  Returns ``path``."""
    fd, tmp = _open_temporary(str(path))
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"newline": "", "encoding": "utf-8"})) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_folder(os.path.dirname(os.path.abspath(str(path))))
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return str(path)


def _fsync_folder(folder: str) -> None:
    """Make a rename in ``folder`` durable; a file system that cannot sync a folder (some network ones) is left
    as it is."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text(path: str, text: str) -> str:
    """``text`` into ``path`` through :func:`write_file`."""
    return write_file(path, lambda fh: fh.write(text))


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what makes a spreadsheet read a text cell as a formula
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def csv_cell(value):
    """``value`` as a CSV cell a spreadsheet shows as text: a text that a spreadsheet would run as a formula
    (starting with ``= + - @``, a tab or a carriage return) gets a leading single quote (OWASP's advice); numbers,
    and texts that are plain numbers (``-0.5``, ``+1.4``), are left as they are.  A carriage return inside a text
    becomes a line feed (which the writer quotes), so that no reader sees a row end there."""
    if not isinstance(value, str):
        return value
    if value.startswith(FORMULA_START) and not _NUMBER.fullmatch(value):
        value = "'" + value
    # a carriage return is no line end to the writer (it would not quote the cell) but is one to every reader
    return value.replace("\r\n", "\n").replace("\r", "\n") if "\r" in value else value


def csv_text(value):
    """The text :func:`csv_cell` neutralised, as it was (the quote taken off again); other values as they are."""
    if isinstance(value, str) and len(value) > 1 and value[0] == "'" and value[1:].startswith(FORMULA_START) \
            and not _NUMBER.fullmatch(value[1:]):
        return value[1:]
    return value


def _safe_frame(frame):
    """``frame`` with every text cell and column name passed through :func:`csv_cell`."""
    import pandas as pd

    text = [c for c in frame.columns if frame[c].dtype == object or pd.api.types.is_string_dtype(frame[c])
            or isinstance(frame[c].dtype, pd.CategoricalDtype)]
    if text:
        frame = frame.assign(**{str(c): [csv_cell(v) for v in frame[c]] for c in text}) \
            if all(isinstance(c, str) for c in text) else frame
    return frame.rename(columns=lambda c: csv_cell(c) if isinstance(c, str) else c)


def write_csv(path: str, frame) -> str:
    """A pandas DataFrame as CSV (no index) through :func:`write_file`, its text cells neutralised
    (:func:`csv_cell`): every CSV table hddgeo writes goes through here or :func:`write_log`."""
    frame = _safe_frame(frame)
    return write_file(path, lambda fh: frame.to_csv(fh, index=False))


def is_temporary(name: str) -> bool:
    """Whether a file name is one of the temporary files of an interrupted write."""
    return ".tmp-" in name


def write_json(path: str, obj) -> None:
    write_file(path, lambda fh: json.dump(obj, fh, indent=2))


MAX_JSON_BYTES = 16 * 2**20  # a config or metrics file is kilobytes


def read_json(path: str) -> dict:
    """A JSON object from ``path``; ``ValueError`` naming the file if it is missing, unreadable or not an object,
    or not a regular file of at most ``MAX_JSON_BYTES`` (a planted FIFO or ``/dev/zero`` would block or never end)."""
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_JSON_BYTES:
            what = f"{info.st_size} bytes" if stat.S_ISREG(info.st_mode) else "not a regular file"
            raise ValueError(f"{path} is {what}: not a JSON file written by hddgeo (at most {MAX_JSON_BYTES} bytes)")
        with open(path) as fh:
            obj = json.load(fh)
    except FileNotFoundError:
        raise ValueError(f"{path} is missing: this is not a complete hddgeo run directory") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}); "
                         f"restore the file or start a new run") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} cannot be read ({err})") from None
    except RecursionError:
        raise ValueError(f"{path} is nested too deeply: not a JSON file written by hddgeo") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path} must hold a JSON object, found {type(obj).__name__}")
    return obj


def write_log(path: str, rows: list) -> None:
    """``rows`` (dicts, possibly with different keys) as CSV, columns in first-seen order."""
    if not rows:
        return
    fields = _fields(rows)

    def fill(fh):
        writer = csv.DictWriter(fh, fieldnames=[csv_cell(f) for f in fields])
        writer.writeheader()
        writer.writerows(_safe_rows(rows))
    write_file(path, fill)


def _safe_rows(rows: list) -> list:
    """Log rows with their keys and text values through :func:`csv_cell`."""
    return [{csv_cell(k): csv_cell(v) for k, v in row.items()} for row in rows]


class LogWriter:
    """``log.csv`` kept in step with a growing list of rows: rows since the last write are appended, and the
    whole file is rewritten (atomically) only on a process's first write or when a row brings a new column.

    A run checkpoints hundreds of times; rewriting every row each time made the cost of a checkpoint grow
    with the run.  A kill during an append can leave a partial last line; the resume rewrites the file
    from the checkpoint's rows first."""

    def __init__(self, path: str):
        self.path, self.fields, self.written = path, None, 0

    def write(self, rows: list) -> None:
        if not rows:
            return
        if self.fields is None or self.written > len(rows):
            fields = _fields(rows)
        else:
            fields = list(self.fields)
            for row in rows[self.written:]:
                fields += [k for k in row if k not in fields]
        if fields != self.fields or self.written > len(rows) or not self._append(rows[self.written:], fields):
            write_log(self.path, rows)
        self.fields, self.written = fields, len(rows)


    def _append(self, rows: list, fields: list) -> bool:
        """Append ``rows`` to the file written before, never through a link (``O_NOFOLLOW``); ``False`` when the
        file is gone or was replaced by a link, which the caller then rewrites whole."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            return False
        with os.fdopen(fd, "a", newline="", encoding="utf-8") as fh:
            csv.DictWriter(fh, fieldnames=[csv_cell(f) for f in fields]).writerows(_safe_rows(rows))
        return True


def _fields(rows: list) -> list:
    fields = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    return fields


def pack_rows(rows: list) -> dict:
    """Log rows (dicts of numbers) as two tensors, which a checkpoint saves and loads far faster than a list
    of thousands of dicts: ``values`` ``(N, K)`` float64 and ``present`` ``(N, K)``, with ``names``."""
    names = _fields(rows)
    # numpy builds the arrays from flat lists several times faster than torch.tensor from nested ones
    values = np.array([float(row.get(k, 0.0)) for row in rows for k in names], dtype=np.float64)
    present = np.array([k in row for row in rows for k in names], dtype=bool)
    shape = (len(rows), len(names))
    # columns whose every value is an int (the iteration, Sinkhorn's iteration count) come back as ints
    integer = [all(type(row[k]) is int for row in rows if k in row) for k in names]
    return {"names": names, "values": torch.from_numpy(values.reshape(shape)),
            "present": torch.from_numpy(present.reshape(shape)), "integer": integer}


def unpack_rows(packed) -> list:
    """The rows of :func:`pack_rows` (integer columns as ints); a plain list of dicts is returned as it is."""
    if isinstance(packed, list):
        return list(packed)
    if not isinstance(packed, dict) or not {"names", "values", "present"} <= set(packed):
        raise ValueError("log rows of a checkpoint must be a list or a packed table (names, values, present)")
    names, values, present = packed["names"], packed["values"].tolist(), packed["present"].tolist()
    integer = packed.get("integer") or [k == "iteration" for k in names]
    return [{k: (int(v) if is_int else v) for k, v, here, is_int in zip(names, vals, mask, integer) if here}
            for vals, mask in zip(values, present)]


def save_tensors(obj, path: str) -> None:
    """``torch.save`` through :func:`write_file`; tensors are moved to the CPU so the file loads anywhere."""
    obj = _to_cpu(obj)
    write_file(path, lambda fh: torch.save(obj, fh), binary=True)


def _to_cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


MAX_TENSOR_FILE_BYTES = 32 * 2**30  # what a .pt file may declare in all (a TinyImageNet IPC 50 checkpoint is ~2 GB)


def _check_archive(path: str, what: str) -> None:
    """``ValueError`` unless ``path`` is a zip archive as ``torch.save`` writes it whose entries, read from its
    central directory before anything is loaded, are stored uncompressed and together declare no more than the
    file holds nor more than :data:`MAX_TENSOR_FILE_BYTES`: a small file that would inflate to gigabytes in
    memory is refused from its header."""
    try:
        size = os.path.getsize(path)
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path} is truncated or corrupt (not the zip archive torch.save writes: {reason[:120]}); "
                         f"delete it or restore an intact copy") from None
    declared = sum(e.file_size for e in entries)
    squeezed = [e.filename for e in entries if e.compress_type != zipfile.ZIP_STORED]
    if squeezed:
        raise ValueError(f"{path} is not a {what} written by hddgeo: its entry {squeezed[0][:80]} is compressed "
                         f"(torch.save stores tensors uncompressed); it is not loaded")
    if declared > size or declared > MAX_TENSOR_FILE_BYTES:
        limit = f"the file's {size:,} bytes" if declared > size else f"the limit of {MAX_TENSOR_FILE_BYTES:,} bytes"
        raise ValueError(f"{path} declares {declared:,} bytes of tensors, more than {limit}: not a {what} written by "
                         f"hddgeo; it is not loaded")


def load_tensors(path: str, what: str = "file") -> dict:
    """A ``.pt`` file written by hddgeo, loaded as data only (``weights_only=True``) onto the CPU.

    ``ValueError`` naming the file when it is missing, truncated, corrupt, or holds anything but tensors
    and plain containers (a pickle that would import or call code)."""
    if not os.path.isfile(path):
        raise ValueError(f"{path} is missing: no {what} in this run directory")
    _check_archive(path, what)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else "refused"
        raise ValueError(f"{path} is not a {what} written by hddgeo: it holds objects other than tensors and plain "
                         f"data, which are never loaded ({reason[:120]})") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path} is truncated or corrupt ({reason[:120]}); delete it or restore an intact copy") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path} is not a {what} written by hddgeo (found a {type(obj).__name__}, not a dict)")
    return obj
