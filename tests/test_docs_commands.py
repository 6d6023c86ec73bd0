"""The commands the documentation shows: every one goes through ``uv run`` and names no machine's path, and
the blocks marked runnable run, as written, in a scratch copy of the repository.

Convention (CONTRIBUTING.md): a fenced ``bash`` block directly preceded by ``<!-- runnable -->`` runs in CI;
``<!-- runnable: slow -->`` marks one that runs only with ``-m slow``. A runnable block in ``README.md``
or ``docs/`` starts in the repository root, one in a package's README (``packages/<name>/**/README.md``) in
that package's folder, where its commands run.
The copy holds the files git knows (nothing a user left behind), and ``uv run`` uses the checkout's
environment (``UV_PROJECT``) without syncing it, so a block cannot change the checkout.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"^<!--\s*runnable(?::\s*(slow))?\s*-->$")
SHELL_LANGUAGES = {"bash", "sh", "shell"}
# Tools that only exist inside the environment: a bare call exits 127 outside an activated venv.
ENV_TOOLS = {"python", "python3", "pytest", "torchrun", "tensorboard", "mlflow", "ruff", "wandb"}
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
ABSOLUTE = re.compile(r"^(/[^/\s]|~/)")


def doc_files() -> list[Path]:
    return [p for p in (ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md")),
                        *sorted((ROOT / "packages").glob("*/README.md")),
                        *sorted((ROOT / "packages").glob("*/*/README.md"))) if p.is_file()]


def console_scripts() -> set[str]:
    names: set[str] = set()
    for pyproject in (ROOT / "packages").glob("*/pyproject.toml"):
        names |= set(tomllib.loads(pyproject.read_text()).get("project", {}).get("scripts", {}))
    return names


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence
    language: str
    text: str
    runnable: bool
    slow: bool

    @property
    def id(self) -> str:
        path = self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path
        return f"{path}:{self.line}"

    @property
    def cwd(self) -> Path:
        """Where the block starts, relative to the repository root."""
        relative = self.path.relative_to(ROOT)
        return Path(*relative.parts[:2]) if relative.parts[0] == "packages" else Path(".")


def blocks(path: Path) -> list[Block]:
    found, lines = [], path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        if stripped.startswith("```"):
            language, start = stripped[3:].strip(), i
            end = next((j for j in range(i + 1, len(lines)) if lines[j].strip().startswith("```")), len(lines))
            previous = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            marker = MARKER.match(previous)
            found.append(Block(path, start + 1, language, "\n".join(lines[i + 1:end]), bool(marker),
                               bool(marker and marker.group(1))))
            i = end + 1
        else:
            i += 1
    return found


def command_lines(block: Block) -> list[str]:
    """The block's commands with backslash continuations joined, comments and heredoc bodies left out."""
    commands, current, heredoc = [], "", None
    for raw in block.text.splitlines():
        if heredoc is not None:
            heredoc = None if raw.strip() == heredoc else heredoc
            continue
        line = raw.split(" #")[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        if current.strip():
            commands.append(current.strip())
            match = re.search(r"<<-?\s*'?\"?(\w+)", current)
            heredoc = match.group(1) if match else None
        current = ""
    return commands


def segments(command: str) -> list[list[str]]:
    """Words of each simple command in ``command`` (split at ``&&``, ``||``, ``;``, ``|``), env assignments
    at the front dropped."""
    out = []
    for part in re.split(r"&&|\|\||;|\|", command):
        try:
            words = shlex.split(part)
        except ValueError:
            words = part.split()
        while words and ENV_ASSIGNMENT.match(words[0]):
            words = words[1:]
        if words:
            out.append(words)
    return out


def shell_blocks() -> list[Block]:
    return [b for path in doc_files() for b in blocks(path) if b.language in SHELL_LANGUAGES]


# ------------------------------------------------------------------------------ non-running checks
def command_problems(block: Block, tools: set[str]) -> list[str]:
    problems = []
    for command in command_lines(block):
        for words in segments(command):
            head = words[0]
            starts_tool = head in ENV_TOOLS or head in tools or head.endswith(".py")
            if starts_tool:
                problems.append(f"{block.id}: '{command}': run {head} through `uv run`")
            for word in words:
                for piece in word.split("="):
                    if ABSOLUTE.match(piece):
                        problems.append(f"{block.id}: '{command}': names the absolute path {piece}")
            if "../shared" in command or any(w.startswith("shared/data") for w in words):
                problems.append(f"{block.id}: '{command}': names the sample data beside the repository")
    return problems


def test_command_checker_flags_bare_tools_machine_paths_and_the_sample_data(tmp_path):
    doc = tmp_path / "README.md"
    doc.write_text("```bash\n"
                   "torchrun --nproc_per_node 2 train.py\n"
                   "cd packages/x && tensorboard --logdir runs\n"
                   "OMP_NUM_THREADS=1 uv run --package x train.py --data-dir /data/GOPRO_Large \\\n"
                   "    --out=~/runs\n"
                   "uv run --package x train.py --data-dir ../../../shared/data/deblur\n"
                   "uv run --package x deblur-train --synthetic   # fine\n"
                   "uv sync --all-packages\n"
                   "```\n")
    problems = command_problems(blocks(doc)[0], {"deblur-train"})
    assert len(problems) == 5, problems
    assert "run torchrun through `uv run`" in problems[0] and "run tensorboard through `uv run`" in problems[1]
    assert "/data/GOPRO_Large" in problems[2] and "~/runs" in problems[3] and "sample data" in problems[4]


def test_documented_commands_go_through_uv_run_and_name_no_machine_path():
    tools = console_scripts()
    problems = [p for block in shell_blocks() for p in command_problems(block, tools)]
    assert not problems, "\n".join(problems)


def test_the_readme_quick_start_is_runnable_and_cheap():
    readme = [b for b in blocks(ROOT / "README.md") if b.runnable]
    assert any(not b.slow for b in readme), "README.md: mark the quick start <!-- runnable -->"


# ---------------------------------------------------------------------------------------- running
RUNNABLE = [b for b in shell_blocks() if b.runnable]


def make_clone(target: Path) -> Path:
    """The files git knows (tracked or new, not ignored), copied: what a fresh clone would hold."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in listed:
        source = ROOT / name
        if name and source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    return make_clone(tmp_path_factory.mktemp("clone"))


def _env() -> dict[str, str]:
    env = dict(os.environ, UV_PROJECT=str(ROOT), UV_FROZEN="1", UV_NO_SYNC="1", OMP_NUM_THREADS="1",
               WANDB_MODE="disabled", PYTHONWARNINGS="ignore")
    env.pop("VIRTUAL_ENV", None)
    return env


def _run_block(block: Block, clone: Path) -> None:
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block.text], cwd=clone / block.cwd, env=_env(),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{block.id} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"


@pytest.mark.parametrize("block", [pytest.param(b, id=b.id, marks=[pytest.mark.slow] if b.slow else [])
                                   for b in RUNNABLE])
def test_runnable_block_runs_as_written(block: Block, clone: Path):
    _run_block(block, clone)


@pytest.mark.slow
def test_readme_main_job_then_the_entry_point_tests_pass_in_the_same_clone(tmp_path: Path):
    """What a new user does first: the README's main job (it leaves checkpoints/ and mlruns/ in the package
    folder), then the tests; the tests that run the entry points must not see what the job left."""
    clone = make_clone(tmp_path)
    main_job = next(b for b in blocks(ROOT / "README.md") if b.runnable and "--epochs 2" in b.text)
    _run_block(main_job, clone)
    assert (clone / "packages" / "deblur_unet" / "checkpoints" / "latest.pth").is_file()
    proc = subprocess.run(["uv", "run", "python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow",
                           "packages/deblur_unet/tests/test_deblur_cli.py", "tests/test_bad_inputs.py",
                           "-k", "test_deblur_cli or entry_point_with_a_zero_byte_image"],
                          cwd=clone, env=_env(), capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-4000:]
