"""File tools confined to a workspace: read_file, write_file and list_dir.

Their docstrings are what the model reads about them.
"""

from __future__ import annotations

import codecs
import difflib
import os
import stat
from typing import Any

from tools.builtin.workspace import Workspace, WorkspaceError
from tools.registry import ToolRegistry

READ_LIMIT_BYTES = 1 << 20  # more than any observation shows; a huge file is not read whole
LIST_LIMIT = 1000


class FileTools:
    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace

    def read_file(self, path: str, encoding: str = "utf-8") -> str:
        """Read a text file from the workspace.

        Args:
            path: The file's path, relative to the workspace root.
            encoding: The file's text encoding, such as "utf-8" or "latin-1".
        """
        text, size = self._read(path, encoding)
        if size > READ_LIMIT_BYTES:
            text += f"\n[... the file has {size:,} bytes; the first {READ_LIMIT_BYTES:,} were read]"
        return text

    def write_file(self, path: str, content: str) -> str:
        """Write a UTF-8 text file in the workspace, replacing it if it exists.

        Missing parent directories are created.

        Args:
            path: The file's path, relative to the workspace root.
            content: The whole new content of the file.
        """
        # Not O_TRUNC: a file that open() refuses (a hard link) must not be emptied first.
        fd = self.workspace.open(path, os.O_WRONLY | os.O_CREAT)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as file:
            file.truncate(0)
            file.write(content)
        count = len(content)
        return f"Wrote {count:,} character{'' if count == 1 else 's'} to {path}."

    def preview_write(self, arguments: dict[str, Any]) -> str:
        """What write_file would change: a unified diff against the file as it is now."""
        path, content = arguments["path"], arguments["content"]
        try:
            exists = self.workspace.resolve(path).exists()
            current, size = self._read(path, "utf-8") if exists else ("", 0)
        except WorkspaceError as refused:
            return f"This write will be refused: {refused}"
        except (OSError, UnicodeDecodeError) as error:
            return f"The current {path} cannot be shown ({error}); it would be replaced."
        before = f"a/{path}" if exists else "/dev/null"
        if size > READ_LIMIT_BYTES:
            return f"{path} ({size:,} bytes) is too large to compare; it would be replaced."
        diff = difflib.unified_diff(
            current.splitlines(), content.splitlines(), before, f"b/{path}", lineterm=""
        )
        return "\n".join(diff) or f"No change: {path} already has this content."

    def list_dir(self, path: str = ".") -> str:
        """List a directory of the workspace: subdirectories end in "/", files show their size.

        Args:
            path: The directory's path, relative to the workspace root ("." is the root).
        """
        fd = self.workspace.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            with os.scandir(fd) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
            lines = [_describe(entry, fd) for entry in entries[:LIST_LIMIT]]
        finally:
            os.close(fd)
        if len(entries) > LIST_LIMIT:
            lines.append(f"... and {len(entries) - LIST_LIMIT:,} more entries")
        return "\n".join(lines) or "(empty directory)"

    def _read(self, path: str, encoding: str) -> tuple[str, int]:
        """The text of the file (at most READ_LIMIT_BYTES of it) and its size in bytes."""
        decoder = codecs.getincrementaldecoder(encoding)()  # an unknown encoding fails first
        fd = self.workspace.open(path)
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            os.close(fd)
            raise IsADirectoryError(f"{path} is a directory; list_dir shows what it holds")
        with os.fdopen(fd, "rb") as file:
            data = file.read(READ_LIMIT_BYTES)
        size = info.st_size
        # final=False when cut: a character split at the limit is dropped, not an error.
        return decoder.decode(data, final=size <= READ_LIMIT_BYTES), size


def _describe(entry: os.DirEntry[str], directory: int) -> str:
    if entry.is_symlink():
        return f"{entry.name} -> {os.readlink(entry.name, dir_fd=directory)}"
    if entry.is_dir(follow_symlinks=False):
        return f"{entry.name}/"
    return f"{entry.name} ({entry.stat(follow_symlinks=False).st_size:,} bytes)"


def register_file_tools(registry: ToolRegistry, workspace: Workspace) -> None:
    files = FileTools(workspace)
    registry.register(tags=("fs",), read_only=True, idempotent=True)(files.read_file)
    registry.register(
        tags=("fs",),
        requires_confirmation=True,
        destructive=True,
        idempotent=True,
        preview=files.preview_write,
    )(files.write_file)
    registry.register(tags=("fs",), read_only=True, idempotent=True)(files.list_dir)
