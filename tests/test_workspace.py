"""Workspace-wide invariants: CI runs the README's command, packages don't shadow each other,
packaging files stay machine-independent, checkpoints load safely everywhere."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = sorted(p for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").exists())


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)
    test_command = next(b for b in blocks if "pytest" in b)
    ci_lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if "pytest" in line]
    assert ci_lines == [test_command]


def test_members_expose_unique_top_level_modules():
    seen: dict[str, str] = {}
    for member in [ROOT / "shared", *PACKAGES]:
        config = tomllib.loads((member / "pyproject.toml").read_text())
        for module in config["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]:
            assert module not in seen, f"{module} exposed by {seen.get(module)} and {member.name}"
            assert module == member.name, f"{member.name} must expose only its own name, not {module}"
            seen[module] = member.name
        assert not (member / "src").exists() or not (member / "src" / "__init__.py").exists()


def test_packaging_files_have_no_machine_paths():
    files = [ROOT / "pyproject.toml", ROOT / "uv.lock", *(m / "pyproject.toml" for m in [ROOT / "shared", *PACKAGES])]
    for path in files:
        text = path.read_text()
        for needle in ("file://", "find-links", "/work/", "/opt/", "/root/"):
            assert needle not in text, f"{path.relative_to(ROOT)} contains {needle!r}"


def test_every_checkpoint_load_is_weights_only():
    offenders = []
    for path in ROOT.rglob("*.py"):
        if any(part.startswith(".") or part in ("tests", "node_modules") for part in path.relative_to(ROOT).parts):
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if "torch.load(" in line and "weights_only=True" not in line:
                offenders.append(f"{path.relative_to(ROOT)}:{number}")
            if "weights_only=False" in line:
                offenders.append(f"{path.relative_to(ROOT)}:{number}")
    assert not offenders, offenders


def test_yaml_is_loaded_safely():
    offenders = []
    for path in ROOT.rglob("*.py"):
        if any(part.startswith(".") for part in path.relative_to(ROOT).parts):
            continue
        text = path.read_text()
        if re.search(r"yaml\.(load|unsafe_load|full_load)\(", text):
            offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, offenders
