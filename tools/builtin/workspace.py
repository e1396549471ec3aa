"""A directory that file tools cannot leave, whatever path or link they are handed.

Code run in the sandbox can create links in the workspace, even while a file tool is
using it, so checking a path is not enough: `open` walks the checked path again one
directory at a time, refusing to follow any link, and checks the file it actually opened.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path, PurePosixPath

_SHOWN_PATH_CHARS = 200  # error messages quote paths, and a model may send huge ones
_MAX_PATH_BYTES = 4096  # Linux's PATH_MAX
_WALK = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


class WorkspaceError(Exception):
    """A path the workspace refuses: outside it, through a link out, or not usable."""


class Workspace:
    def __init__(self, root: Path | str) -> None:
        if not Path(root).is_dir():
            raise WorkspaceError(f"the workspace {str(root)!r} is not a directory")
        self.root = Path(root).resolve()

    def resolve(self, relative: str, *, must_exist: bool = False) -> Path:
        """The real path of `relative` inside the workspace ("" or "." is the workspace).

        Refuses `..`, absolute paths, symbolic links that lead out, and regular files with
        more than one hard link (the other name may be outside, and nothing says where).
        """
        shown = _show(relative)
        if "\0" in relative:
            raise WorkspaceError(f"{shown} contains a NUL character")
        try:
            size = len(os.fsencode(relative))
        except UnicodeEncodeError:
            raise WorkspaceError(f"{shown} is not a valid file name") from None
        # Resolving takes time quadratic in the number of parts: refuse what no system takes.
        if size > _MAX_PATH_BYTES:
            raise WorkspaceError(f"{shown} is longer than {_MAX_PATH_BYTES} bytes")
        path = PurePosixPath(relative)
        if path.is_absolute():
            raise WorkspaceError(f"{shown} is absolute; give a path relative to the workspace")
        if ".." in path.parts:
            raise WorkspaceError(f"{shown} contains '..'; paths may not climb out of the workspace")
        try:
            real = (self.root / path).resolve()
            if not real.is_relative_to(self.root):
                raise WorkspaceError(f"{shown} leads outside the workspace through a symbolic link")
            info = real.stat()
        except FileNotFoundError:
            if must_exist:
                raise WorkspaceError(f"{shown} does not exist") from None
            return real
        except (OSError, RuntimeError) as error:  # a link loop, a name too long, ...
            reason = getattr(error, "strerror", None) or str(error)  # without the huge name
            raise WorkspaceError(f"{shown} cannot be used: {reason}") from None
        _refuse_hard_link(info, shown)
        return real

    def open(self, relative: str, flags: int = os.O_RDONLY, mode: int = 0o644) -> int:
        """A file descriptor for `relative`, which `resolve` accepts, opened link by link.

        Opens regular files and directories only. With os.O_CREAT, missing parent
        directories are created. Raises WorkspaceError, or the OSError of opening
        (IsADirectoryError, NotADirectoryError, ...).
        """
        shown = _show(relative)
        parts = (
            self.resolve(relative, must_exist=not flags & os.O_CREAT).relative_to(self.root).parts
        )
        # O_NONBLOCK: a FIFO planted in the workspace is refused below instead of hanging here.
        flags |= os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        directory = os.open(self.root, _WALK)
        try:
            try:
                for part in parts[:-1]:
                    if flags & os.O_CREAT:
                        with contextlib.suppress(FileExistsError):
                            os.mkdir(part, dir_fd=directory)
                    inner = os.open(part, _WALK | os.O_NOFOLLOW, dir_fd=directory)
                    os.close(directory)
                    directory = inner
            except (NotADirectoryError, FileNotFoundError) as error:
                # resolve() saw real directories all the way: something changed them since.
                raise WorkspaceError(f"{shown} changed while it was opened: {error}") from None
            try:
                fd = os.open(parts[-1] if parts else ".", flags, mode, dir_fd=directory)
            except OSError as error:
                if error.errno == errno.ELOOP:  # it became a symbolic link since resolve()
                    raise WorkspaceError(f"{shown} became a link while it was opened") from None
                raise
        finally:
            os.close(directory)
        info = os.fstat(fd)
        try:
            if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
                raise WorkspaceError(f"{shown} is neither a regular file nor a directory")
            _refuse_hard_link(info, shown)
        except WorkspaceError:
            os.close(fd)
            raise
        return fd


def _refuse_hard_link(info: os.stat_result, shown: str) -> None:
    if stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
        raise WorkspaceError(
            f"{shown} is a hard link ({info.st_nlink} names for one file), which may lead "
            "outside the workspace; it is refused"
        )


def _show(relative: str) -> str:
    if len(relative) <= _SHOWN_PATH_CHARS:
        return repr(relative)
    return f"{relative[:_SHOWN_PATH_CHARS]!r}... ({len(relative):,} characters)"
