"""Faults that explain themselves, and one writer per output folder.

- `CourseError` and its kinds: an expected fault (a bad setting, a broken data file or model folder, a busy --out,
  a full disk, an interrupt) whose message names the file or variable at fault and the fix. The command-line tools
  print that message alone and exit 2 (130 for Ctrl-C); `RLHF_DEBUG=1` shows the traceback as well.
- `hold_output(out)`: an exclusive `fcntl` lock on `out/.lock` for a run's lifetime, so a second run into the same
  folder (two notebook kernels, a notebook and a terminal) is refused at once, naming the process that holds it.
  The kernel releases the lock when its process ends, however it ends (SIGKILL included): a stale lock file never
  blocks.
- `atomic_write(path)`: results are written under a temporary name and renamed into place, so a run that dies while
  writing them leaves the previous file or none, never half of one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from typing import IO
from pathlib import Path

DEBUG_ENV = "RLHF_DEBUG"
LOCK_NAME = ".lock"
"""The lock file inside an output folder (a dot-file: not one of the run's results)."""


class CourseError(Exception):
    """An expected fault: its message says what is wrong and what to do. CLIs print it without a traceback."""

    exit_code = 2


class SettingError(CourseError, ValueError):
    """An argument, environment variable or configuration that cannot work."""


class _Message:
    """For the OSError kinds below: their str is the message alone (OSError's would add "[Errno ...]")."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class MissingPathError(_Message, CourseError, FileNotFoundError):
    """A file or folder a setting points to does not exist."""


class DataFileError(CourseError, ValueError):
    """A data file that cannot be read as the course's data (not parquet, truncated, wrong columns)."""


class ModelFolderError(CourseError, ValueError):
    """A model folder that is not a model for its role (no weights, no tokenizer, wrong architecture)."""


class OutputExistsError(_Message, CourseError, FileExistsError):
    """The output folder already holds a finished result that a command would overwrite."""


class OutputBusyError(CourseError, RuntimeError):
    """Another process is writing to the same output folder."""


class OutputWriteError(_Message, CourseError, OSError):
    """The output folder cannot be written (full disk, no permission, not a folder)."""


class OutOfMemoryError(CourseError, RuntimeError):
    """The accelerator ran out of memory; the message names the setting to lower."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C: the message says what was reached and how to continue. A KeyboardInterrupt, not an Exception, so
    callers that stop on interrupts (a notebook, a loop over runs) still stop, and `except Exception` does not
    swallow it."""

    exit_code = 130


# ---------------------------------------------------------------------------------------------------------------
# One writer per output folder


def _owner(lock_path: Path) -> str:
    try:
        info = json.loads(lock_path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another process"
    return f"process {info.get('pid')} (started {info.get('started')}: {info.get('command')})"


def _command_line() -> str:
    """This process's command, as the user typed it: `python -m rlhf_helpers.train ...`, or "a Jupyter kernel"."""
    program = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path("python")
    if "ipykernel" in program.name:
        return "a Jupyter kernel"
    if program.parent.name == "rlhf_helpers":
        return shlex.join(["python", "-m", f"rlhf_helpers.{program.stem}", *sys.argv[1:]])
    return shlex.join([program.name, *sys.argv[1:]]) or "python"


@contextlib.contextmanager
def file_lock(path: Path | str, wait: Callable[[], None] | None = None) -> Iterator[IO | None]:
    """The one lock of the course: an exclusive `fcntl` lock on the file `path` (created if need be) for the block,
    yielding the open file. If another process holds it: with `wait`, call `wait()` (to say why we wait) and block
    until it is free; without, yield None at once and let the caller refuse or skip. The kernel frees a lock when
    its process ends, however it ends (SIGKILL included): a lock file left behind never blocks anyone."""
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if wait is None:
                yield None
                return
            wait()
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield handle  # closing the file releases the lock


def output_holder(out: Path | str) -> str | None:
    """Who holds `out`'s lock right now, or None if nobody does (checked without waiting; the lock is not kept)."""
    lock_path = Path(out) / LOCK_NAME
    if not lock_path.is_file():
        return None
    with file_lock(lock_path) as handle:
        return None if handle else _owner(lock_path)


def busy_message(out: Path | str, holder: str, what: str = "run") -> str:
    return (f"{out} is in use by {holder}, which is still writing a {what} there. Wait for it to finish (or stop "
            f"it), or choose another --out.")


@contextlib.contextmanager
def hold_output(out: Path | str, what: str = "run") -> Iterator[Path]:
    """Create `out` and hold an exclusive lock on it until the block ends; refuse at once if another process has it.

    The lock file records who holds it (pid, start time, command), for the message a second writer gets. It is
    written only once the lock is ours, and left in place afterwards: a lock belongs to a live open file, not to the
    file's existence, so a file left by a killed process blocks nobody."""
    out = Path(out)
    with contextlib.ExitStack() as stack:
        try:
            out.mkdir(parents=True, exist_ok=True)
            handle = stack.enter_context(file_lock(out / LOCK_NAME))
        except OSError as error:
            raise OutputWriteError(unwritable_message(out, error)) from error
        if handle is None:
            raise OutputBusyError(busy_message(out, _owner(out / LOCK_NAME), what))
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                                 "command": _command_line()}))
        handle.flush()
        yield out


# ---------------------------------------------------------------------------------------------------------------
# Writing results so that nothing half-written looks finished


@contextlib.contextmanager
def atomic_write(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block succeeds, rename it to `path` (atomic on one file
    system), else remove it. Works for files and folders (a saved model)."""
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if tmp.is_dir():
        shutil.rmtree(tmp)
    try:
        yield tmp
        if path.is_dir() and tmp.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path | str, text: str) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(text)


def write_bytes(path: Path | str, data: bytes) -> None:
    """Every binary file the course writes goes through Python's own file writes (safetensors and torch serialize
    to bytes first), so a full disk is an OSError with errno ENOSPC, not a library's opaque error."""
    try:
        Path(path).write_bytes(data)
    except OSError as error:  # a failed write() names no file; say which one it was
        raise OSError(error.errno, error.strerror, str(path)) from error


# ---------------------------------------------------------------------------------------------------------------
# Recognising faults


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def is_disk_full(error: BaseException) -> bool:
    """ENOSPC / EDQUOT anywhere in the exception chain, or the text libraries use for it (safetensors says
    "No space left on device (os error 28)")."""
    for e in _chain(error):
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(e)
        if "No space left on device" in text or "os error 28" in text or "Disk quota exceeded" in text:
            return True
    return False


def is_out_of_memory(error: BaseException) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return any(isinstance(e, torch.OutOfMemoryError) for e in _chain(error))


def _filename(error: BaseException) -> str | None:
    for e in _chain(error):
        if isinstance(e, OSError) and e.filename:
            return str(e.filename)
    return None


def is_under(path: str | os.PathLike | None, folder: Path) -> bool:
    """True when `path` lies inside `folder` (or is it)."""
    if not path:
        return False
    try:
        Path(os.path.abspath(path)).relative_to(os.path.abspath(folder))
    except ValueError:
        return False
    return True


def unwritable_message(out: Path, error: OSError) -> str:
    reason = error.strerror or str(error)
    where = error.filename or out
    return (f"Cannot write the output folder {out} ({reason}: {where}). Choose an --out you can write to (a folder, "
            f"or a path that does not exist yet).")


def disk_full_message(out: Path, error: BaseException) -> str:
    """The first sentence of a full-disk message: which folder, and the file being written when it filled."""
    name = _filename(error)
    where = f" while writing {name}" if name else ""
    return f"No space left on the device that holds {out}{where}. Free some space first."


@contextlib.contextmanager
def explain_faults(out: Path, where: Callable[[], str], next_step: Callable[[], str],
                   memory: Callable[[], str]) -> Iterator[None]:
    """Ctrl-C, a full disk, an unwritable `out` and CUDA running out of memory, turned into messages that say where the
    work stopped (`where()`: "at step 3 of 60", "while training the reward models"), what is intact and how to go on
    (`next_step()`), and, for memory, which setting to lower (`memory()`). Every long job uses this one translator."""
    try:
        yield
    except RunInterrupted:
        raise
    except KeyboardInterrupt:
        raise RunInterrupted(f"Interrupted {where()} ({out}). {next_step()}") from None
    except Exception as error:
        if is_disk_full(error):
            raise OutputWriteError(f"{disk_full_message(out, error)} It stopped {where()}. {next_step()}") from error
        if is_out_of_memory(error):
            raise OutOfMemoryError(f"CUDA ran out of memory {where()}. {memory()} {next_step()}") from error
        cannot_write = isinstance(error, (PermissionError, NotADirectoryError, IsADirectoryError)) or (
            isinstance(error, OSError) and error.errno == errno.EROFS)
        if cannot_write and is_under(error.filename, out):
            raise OutputWriteError(unwritable_message(out, error)) from error
        raise


# ---------------------------------------------------------------------------------------------------------------
# The command-line tools' handler


def debug() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def run_cli(main: Callable[[], object]) -> object:
    """Call `main()`; an expected fault prints its message (a few lines, no traceback) and exits 2, Ctrl-C exits
    130. `RLHF_DEBUG=1` re-raises instead, traceback and all."""
    try:
        return main()
    except SystemExit:
        raise
    except BaseException as error:  # noqa: BLE001 - sorted below: expected faults get a message, the rest re-raise
        if debug():
            raise
        if isinstance(error, (CourseError, RunInterrupted)):
            code, message = error.exit_code, str(error)
        elif isinstance(error, KeyboardInterrupt):
            code, message = 130, "Interrupted (Ctrl-C)."
        elif is_disk_full(error):
            code, message = 2, f"No space left on the device ({_filename(error) or error}). Free some space and retry."
        elif is_out_of_memory(error):
            code, message = 2, "CUDA ran out of memory. Lower the batch sizes (--mini-batch-size first) and retry."
        else:
            raise
        print(f"error: {message}" if code != 130 else message, file=sys.stderr, flush=True)
        if code != 130:
            print(f"(set {DEBUG_ENV}=1 to see the traceback)", file=sys.stderr, flush=True)
        raise SystemExit(code) from None
