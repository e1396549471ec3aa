"""The file tools stay inside their workspace, whatever path or link they are handed."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tools import ExecutionStatus, ToolExecutor, ToolRegistry
from tools.builtin import build_registry
from tools.builtin.files import READ_LIMIT_BYTES, register_file_tools
from tools.builtin.workspace import Workspace, WorkspaceError

CONFIRMED = {"confirmed": True}


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    secret = tmp_path / "outside"
    secret.mkdir()
    (secret / "secret.txt").write_text("the secret")
    (secret / "linked.txt").write_text("the secret")
    return secret


@pytest.fixture
def root(tmp_path: Path, outside: Path) -> Path:
    root = tmp_path / "workspace"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "a.txt").write_text("alpha\n")
    (root / "link_out").symlink_to(outside / "secret.txt")
    (root / "dir_out").symlink_to(outside, target_is_directory=True)
    (root / "link_in").symlink_to(root / "docs" / "a.txt")
    os.link(outside / "linked.txt", root / "hard_out")
    return root


@pytest.fixture
def registry(root: Path) -> ToolRegistry:
    registry = ToolRegistry()
    register_file_tools(registry, Workspace(root))
    return registry


@pytest.fixture
def executor(registry: ToolRegistry) -> ToolExecutor:
    return ToolExecutor(registry)


ESCAPES = {
    "dot-dot": "../outside/secret.txt",
    "dot-dot inside a path": "docs/../../outside/secret.txt",
    "absolute": "/etc/passwd",
    "symlink to a file outside": "link_out",
    "symlinked directory": "dir_out/secret.txt",
    "hard link to a file outside": "hard_out",
}
WORDS = {
    "dot-dot": "'..'",
    "dot-dot inside a path": "'..'",
    "absolute": "absolute",
    "symlink to a file outside": "leads outside the workspace through a symbolic link",
    "symlinked directory": "leads outside the workspace through a symbolic link",
    "hard link to a file outside": "is a hard link",
}


def _attempts(path: str) -> list[tuple[str, dict]]:
    return [
        ("read_file", {"path": path}),
        ("write_file", {"path": path, "content": "pwned"}),
        ("list_dir", {"path": path}),
    ]


@pytest.mark.security
@pytest.mark.parametrize("escape", list(ESCAPES))
async def test_every_file_tool_refuses_every_escape(escape, executor, outside, root):
    """Protection: every path a file tool is handed resolves inside the workspace, or the
    call is refused before anything is read, written or listed (the sandboxes' escapes
    are attempted in tests/security; the file tools run in the server's own process)."""
    for tool, arguments in _attempts(ESCAPES[escape]):
        result = await executor.execute(tool, arguments, context=CONFIRMED)

        assert result.status == ExecutionStatus.ERROR, (tool, result)
        assert result.error.startswith("WorkspaceError: ")
        assert WORDS[escape] in result.error
    assert (outside / "secret.txt").read_text() == "the secret"
    assert (outside / "linked.txt").read_text() == "the secret"
    assert sorted(p.name for p in outside.iterdir()) == ["linked.txt", "secret.txt"]


async def test_read_file_reads_inside_and_follows_links_that_stay_inside(executor):
    for path in ("docs/a.txt", "./docs/a.txt", "link_in"):
        result = await executor.execute("read_file", {"path": path})
        assert result.status == ExecutionStatus.SUCCESS
        assert result.result == "alpha\n"


async def test_read_file_reports_what_it_cannot_read(executor, root):
    (root / "binary.bin").write_bytes(b"\xff\xfe\x00")

    missing = await executor.execute("read_file", {"path": "nope.txt"})
    directory = await executor.execute("read_file", {"path": "docs"})
    binary = await executor.execute("read_file", {"path": "binary.bin"})
    latin = await executor.execute("read_file", {"path": "binary.bin", "encoding": "latin-1"})
    unknown = await executor.execute("read_file", {"path": "docs/a.txt", "encoding": "klingon"})

    assert missing.error == "WorkspaceError: 'nope.txt' does not exist"
    assert directory.error == "IsADirectoryError: docs is a directory; list_dir shows what it holds"
    assert binary.error.startswith("UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff")
    assert latin.result == "ÿþ\x00"
    assert unknown.error == "LookupError: unknown encoding: klingon"


async def test_read_file_reads_a_huge_file_only_up_to_its_limit(executor, root):
    # A multi-byte character straddles the limit: it is dropped, not an error.
    (root / "huge.txt").write_text("a" * (READ_LIMIT_BYTES - 1) + "é" + "b" * 100)

    result = await executor.execute("read_file", {"path": "huge.txt"})

    assert result.status == ExecutionStatus.SUCCESS
    assert result.result.startswith("a" * (READ_LIMIT_BYTES - 1) + "\n[... the file has ")
    assert result.truncated


async def test_a_fifo_is_refused_rather_than_read_forever(executor, root):
    os.mkfifo(root / "pipe")

    result = await executor.execute("read_file", {"path": "pipe"})

    assert result.error == "WorkspaceError: 'pipe' is neither a regular file nor a directory"


async def test_write_file_needs_confirmation(executor, root):
    result = await executor.execute("write_file", {"path": "new.txt", "content": "x"})

    assert result.status == ExecutionStatus.PERMISSION_DENIED
    assert not (root / "new.txt").exists()


async def test_write_file_creates_and_replaces_files_and_parent_directories(executor, root):
    created = await executor.execute(
        "write_file", {"path": "src/pkg/mod.py", "content": "print(1)\r\n"}, context=CONFIRMED
    )
    replaced = await executor.execute(
        "write_file", {"path": "docs/a.txt", "content": "b"}, context=CONFIRMED
    )

    assert created.result == "Wrote 10 characters to src/pkg/mod.py."
    assert replaced.result == "Wrote 1 character to docs/a.txt."
    assert (root / "src/pkg/mod.py").read_bytes() == b"print(1)\r\n"
    assert replaced.status == ExecutionStatus.SUCCESS
    assert (root / "docs/a.txt").read_text() == "b"


async def test_write_file_never_empties_a_hard_linked_file(executor, outside):
    await executor.execute("write_file", {"path": "hard_out", "content": ""}, context=CONFIRMED)

    assert (outside / "linked.txt").read_text() == "the secret"


def test_write_files_preview_is_a_diff_against_the_file_as_it_is(registry):
    write_file = registry.get("write_file")

    def preview(path: str, content: str) -> str:
        return write_file.preview(write_file.validate({"path": path, "content": content}))

    assert preview("docs/a.txt", "alpha\nbeta\n") == (
        "--- a/docs/a.txt\n+++ b/docs/a.txt\n@@ -1 +1,2 @@\n alpha\n+beta"
    )
    assert preview("new.txt", "hi") == "--- /dev/null\n+++ b/new.txt\n@@ -0,0 +1 @@\n+hi"
    assert preview("docs/a.txt", "alpha\n") == "No change: docs/a.txt already has this content."
    assert preview("link_out", "x").startswith("This write will be refused: 'link_out' leads")


async def test_list_dir_shows_directories_files_and_links(executor, root, outside):
    root_listing = await executor.execute("list_dir", {})
    docs_listing = await executor.execute("list_dir", {"path": "docs"})

    assert root_listing.result.splitlines() == [
        f"dir_out -> {outside}",
        "docs/",
        "hard_out (10 bytes)",
        f"link_in -> {root}/docs/a.txt",
        f"link_out -> {outside}/secret.txt",
    ]
    assert docs_listing.result == "a.txt (6 bytes)"


async def test_list_dir_of_an_empty_directory_and_of_a_file(executor, root):
    (root / "empty").mkdir()

    empty = await executor.execute("list_dir", {"path": "empty"})
    not_a_dir = await executor.execute("list_dir", {"path": "docs/a.txt"})

    assert empty.result == "(empty directory)"
    assert not_a_dir.error.startswith("NotADirectoryError")


def test_build_registry_registers_the_file_tools(tmp_path):
    registry = build_registry(tmp_path)

    tools = {tool.name: tool for tool in registry.list_tools(tag="fs")}

    assert set(tools) == {"read_file", "write_file", "list_dir"}
    assert tools["write_file"].requires_confirmation
    assert tools["write_file"].destructive
    assert tools["write_file"].preview is not None
    assert tools["read_file"].read_only
    assert tools["list_dir"].read_only
    assert not tools["read_file"].requires_confirmation
    assert (
        tools["read_file"]
        .parameters["properties"]["path"]["description"]
        .startswith("The file's path")
    )


def test_a_workspace_must_be_a_directory(tmp_path):
    with pytest.raises(WorkspaceError, match="not a directory"):
        Workspace(tmp_path / "missing")


class RacingWorkspace(Workspace):
    """Swaps a checked directory for a link right after the check, as racing code could."""

    def __init__(self, root: Path, outside: Path) -> None:
        super().__init__(root)
        self.outside = outside

    def resolve(self, relative: str, *, must_exist: bool = False) -> Path:
        real = super().resolve(relative, must_exist=must_exist)
        shutil.rmtree(self.root / "docs")
        (self.root / "docs").symlink_to(self.outside, target_is_directory=True)
        return real


def test_a_link_swapped_in_after_the_check_is_refused(root, outside):
    (outside / "a.txt").write_text("outside")
    workspace = RacingWorkspace(root, outside)

    with pytest.raises(WorkspaceError, match="changed while it was opened"):
        workspace.open("docs/a.txt")


def test_huge_and_odd_paths_are_refused_with_a_short_message(root):
    workspace = Workspace(root)

    with pytest.raises(WorkspaceError, match="longer than 4096 bytes") as huge:
        workspace.resolve("x/" * 100_000)
    with pytest.raises(WorkspaceError, match="NUL"):
        workspace.resolve("a\0b")
    with pytest.raises(WorkspaceError, match="not a valid file name"):
        workspace.resolve("\ud800")
    with pytest.raises(WorkspaceError, match="File name too long"):
        workspace.resolve("y" * 300)

    assert len(str(huge.value)) < 400
