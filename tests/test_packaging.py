"""The Dockerfile's COPY and RUN steps replayed in a temporary directory, with no Docker engine.

The build context is the repository less what .dockerignore drops; the image's file system is a
folder (WORKDIR /app is `<root>/app`); each RUN runs under /bin/sh with a PATH that holds only a
stub `pip` and `python` and a few file tools, so nothing is installed and nothing is downloaded. The
stub pip records what it was asked to install: requirements read from `-r` files, or a local
project, for which it builds the metadata through setuptools' PEP 517 hook (as pip would, so a
broken pyproject.toml or a missing README fails the RUN) and lists the packages setuptools would
install.

This is what an image build that listed packages by hand lacked: the dependency layer must need nothing but
pyproject.toml, and the code layer must install every package of the repository and not tests/.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pytest

REPO = Path(__file__).resolve().parent.parent
# The dependency step reads pyproject.toml with tomllib, in the image's Python (3.11).
needs_tomllib = pytest.mark.skipif(sys.version_info < (3, 11), reason="the Dockerfile's dependency step uses tomllib (3.11+)")
SCRIPTS = ("train.py", "evaluate.py", "sweep.py")
# Host tools a RUN may use besides pip and python; anything else (apt-get, curl, ...) is not found.
FILE_TOOLS = ("rm", "mkdir", "cp", "mv", "touch", "cat", "ls", "ln", "chmod", "test", "true", "false")
IGNORED_INSTRUCTIONS = {
    "FROM",
    "ARG",
    "LABEL",
    "VOLUME",
    "ENTRYPOINT",
    "CMD",
    "EXPOSE",
    "USER",
    "HEALTHCHECK",
    "SHELL",
    "STOPSIGNAL",
    "MAINTAINER",
}


class ReplayError(Exception):
    """The image build would fail at this instruction (or the replay cannot follow it)."""


# --- the build context: .dockerignore as Docker reads it ----------------------------------------


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Docker's pattern syntax: `*` and `?` within one path segment, `**` across segments."""
    out, i = "", 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**/", i):
            out, i = out + "(.*/)?", i + 3
            continue
        if pattern.startswith("**", i):
            out, i = out + ".*", i + 2
            continue
        if char == "*":
            out += "[^/]*"
        elif char == "?":
            out += "[^/]"
        elif char == "[" and "]" in pattern[i + 1 :]:
            end = pattern.index("]", i + 1)
            body = pattern[i + 1 : end]
            out += "[" + ("^" + body[1:] if body.startswith("!") else body) + "]"
            i = end
        elif char == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        else:
            out += re.escape(char)
        i += 1
    return re.compile(out + r"\Z")


def _ignore_rules(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for line in text.splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        pattern = os.path.normpath(pattern.removeprefix("!").strip()).lstrip("/")
        rules.append((negated, _glob_regex(pattern)))
    return rules


def _is_ignored(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Last matching rule wins; a rule matches a path or any folder above it."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for negated, regex in rules:
        if any(regex.match(candidate) for candidate in candidates):
            ignored = not negated
    return ignored


def context_files(root: Path) -> set[str]:
    """Files (posix paths relative to root) that `docker build root` sends."""
    ignore = root / ".dockerignore"
    rules = _ignore_rules(ignore.read_text() if ignore.is_file() else "")
    can_reinclude = any(negated for negated, _ in rules)
    files = set()
    for folder, dirs, names in os.walk(root):
        relative = Path(folder).relative_to(root).as_posix()
        prefix = "" if relative == "." else relative + "/"
        if not can_reinclude:
            dirs[:] = [name for name in dirs if not _is_ignored(prefix + name, rules)]
        files.update(prefix + name for name in names if not _is_ignored(prefix + name, rules))
    return files


# --- the replay ---------------------------------------------------------------------------------


@dataclass
class Step:
    keyword: str
    args: str
    workdir: Path
    files_before: set[str] = field(default_factory=set)  # under workdir, for RUN steps
    pip_calls: list[dict] = field(default_factory=list)


@dataclass
class Replay:
    root: Path
    steps: list[Step]


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) with line continuations joined and comment lines dropped."""
    instructions, pending = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and pending):
            continue  # comments, and blank lines inside a continuation, as Docker drops them
        if not line:
            continue
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        keyword, _, args = (pending + line).partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        pending = ""
    if pending:
        raise ReplayError(f"the Dockerfile ends inside a continued line: {pending!r}")
    return instructions


def _words(args: str) -> list[str]:
    return json.loads(args) if args.startswith("[") else shlex.split(args)


def _copy(args: str, context_root: Path, context: set[str], root: Path, workdir: Path) -> None:
    words = _words(args)
    flags = [word for word in words if word.startswith("--")]
    if any(flag.startswith("--from") for flag in flags):
        raise ReplayError(f"COPY {args}: copying from another stage is not replayed")
    *sources, dest = [word for word in words if not word.startswith("--")]
    if not sources:
        raise ReplayError(f"COPY {args}: no source")
    folders = {str(PurePosixPath(path).parent) for path in context}
    folders |= {str(parent) for path in context for parent in PurePosixPath(path).parents}
    folders.discard(".")
    target = root / dest.lstrip("/") if dest.startswith("/") else workdir / dest
    into_folder = dest.endswith("/") or dest in (".", "./") or target.is_dir() or len(sources) > 1
    for source in sources:
        source = os.path.normpath(source).lstrip("/")
        if source == ".":
            matches = ["."]
        elif re.search(r"[*?\[]", source):
            regex = _glob_regex(source.replace("**", "*"))
            matches = sorted(path for path in context | folders if regex.match(path))
        else:
            matches = [source] if source in context or source in folders else []
        if not matches:
            raise ReplayError(f"COPY {args}: {source} is not in the build context (missing, or dropped by .dockerignore)")
        for match in matches:
            if match == "." or match in folders:  # a folder: its contents go into dest
                under = "" if match == "." else match + "/"
                for path in sorted(path for path in context if path.startswith(under)):
                    out = target / path[len(under) :]
                    out.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(context_root / path, out)
            else:
                out = target / PurePosixPath(match).name if into_folder else target
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(context_root / match, out)


STUB_PIP = """\
import json, os, sys, tempfile

os.environ["PATH"] = os.environ["REPLAY_HOST_PATH"]
args = sys.argv[1:]
if args[:1] != ["install"]:
    sys.exit(f"stub pip: only `pip install` is replayed, not {args}")
call = {"argv": args, "cwd": os.getcwd(), "requirements": [], "local": [], "editable": False}
takes_value = {"-c", "--constraint", "-i", "--index-url", "--extra-index-url", "-f", "--find-links",
               "-t", "--target", "--prefix", "--root", "--progress-bar", "--config-settings"}
words = iter(args[1:])
for word in words:
    if word in ("-r", "--requirement") or word.startswith("--requirement="):
        path = word.partition("=")[2] or next(words)
        with open(path) as handle:
            lines = [line.split(" #")[0].strip() for line in handle]
        call["requirements"] += [line for line in lines if line and not line.startswith("#")]
    elif word in ("-e", "--editable"):
        call["editable"] = True
        call["local"].append(next(words))
    elif word in takes_value:
        next(words)
    elif word.startswith("-"):
        pass
    elif word.startswith((".", "/")) or os.path.isdir(word):
        call["local"].append(word)
    else:
        call["requirements"].append(word)
for project in call["local"]:
    os.chdir(project)
    from setuptools import build_meta
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    hook = build_meta.prepare_metadata_for_build_editable if call["editable"] else build_meta.prepare_metadata_for_build_wheel
    hook(tempfile.mkdtemp())
    dist = apply_configuration(Distribution(), "pyproject.toml")
    call["packages"] = sorted(dist.packages or [])
    call["py_modules"] = sorted(dist.py_modules or [])
    os.chdir(call["cwd"])
with open(os.environ["REPLAY_PIP_LOG"], "a") as log:
    log.write(json.dumps(call) + "\\n")
"""


def _stub_bin(folder: Path) -> Path:
    folder.mkdir()
    pip = folder / "pip"
    pip.write_text(f"#!{sys.executable}\n" + STUB_PIP)
    python = folder / "python"
    python.write_text(
        textwrap.dedent(f"""\
        #!/bin/sh
        if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then shift 2; exec "{pip}" "$@"; fi
        exec "{sys.executable}" "$@"
        """)
    )
    for stub in (pip, python):
        stub.chmod(0o755)
    for alias, real in (("pip3", pip), ("python3", python)):
        (folder / alias).symlink_to(real)
    for tool in FILE_TOOLS:
        if (found := shutil.which(tool)) and not (folder / tool).exists():
            (folder / tool).symlink_to(found)
    return folder


def _env_pairs(args: str) -> dict[str, str]:
    words = shlex.split(args)
    if words and "=" not in words[0]:  # the old `ENV KEY value` form
        return {words[0]: " ".join(words[1:])}
    return dict(word.split("=", 1) for word in words)


def replay_dockerfile(text: str, context_root: Path, scratch: Path) -> Replay:
    """Replays COPY, WORKDIR, ENV and RUN; raises ReplayError where `docker build` would fail."""
    context = context_files(context_root)
    root = scratch / "rootfs"
    root.mkdir()
    stubs = _stub_bin(scratch / "stub-bin")
    log = scratch / "pip-calls.jsonl"
    env = {"REPLAY_HOST_PATH": os.environ.get("PATH", ""), "REPLAY_PIP_LOG": str(log), "HOME": str(scratch)}
    workdir, steps = root, []
    for keyword, args in dockerfile_instructions(text):
        step = Step(keyword, args, workdir)
        steps.append(step)
        if keyword == "WORKDIR":
            workdir = root / args.lstrip("/") if args.startswith("/") else workdir / args
            workdir.mkdir(parents=True, exist_ok=True)
        elif keyword == "ENV":
            env.update(_env_pairs(args))
        elif keyword == "COPY":
            _copy(args, context_root, context, root, workdir)
        elif keyword == "RUN":
            step.files_before = {path.relative_to(workdir).as_posix() for path in workdir.rglob("*") if path.is_file()}
            command = _words(args) if args.startswith("[") else ["/bin/sh", "-c", args]
            done = log.read_text().count("\n") if log.exists() else 0
            result = subprocess.run(
                command, cwd=workdir, env={**env, "PATH": str(stubs)}, capture_output=True, text=True, timeout=120
            )
            if result.returncode:
                raise ReplayError(f"RUN {args}\nexited {result.returncode}:\n{result.stdout}{result.stderr}")
            lines = log.read_text().splitlines() if log.exists() else []
            step.pip_calls = [json.loads(line) for line in lines[done:]]
        elif keyword not in IGNORED_INSTRUCTIONS:
            raise ReplayError(f"{keyword} {args}: not replayed (extend tests/test_packaging.py)")
    return Replay(root, steps)


# --- what the repository holds -----------------------------------------------------------------


def repository_packages(root: Path) -> set[str]:
    """Every package of the repository: folders with __init__.py from the top down, tests/ aside."""
    packages = set()

    def walk(folder: Path, name: str) -> None:
        packages.add(name)
        for child in sorted(folder.iterdir()):
            if child.is_dir() and (child / "__init__.py").is_file():
                walk(child, f"{name}.{child.name}")

    for top in sorted(root.iterdir()):
        if top.is_dir() and top.name != "tests" and (top / "__init__.py").is_file():
            walk(top, top.name)
    return packages


def dependency_layer_problems(replay: Replay, root: Path) -> list[str]:
    """What ties the dependency install to the code, so that a code change (or a new package) breaks it."""
    runs = [step for step in replay.steps if step.pip_calls]
    if not runs:
        return ["no RUN calls pip install"]
    step = runs[0]
    top_level = {name.partition(".")[0] for name in repository_packages(root)}
    problems = []
    if "pyproject.toml" not in step.files_before:
        problems.append("pyproject.toml is not copied before the dependency install")
    code = sorted(path for path in step.files_before if path.partition("/")[0] in top_level or path.endswith(".py"))
    if code:
        problems.append(f"the dependency install sees project code: {code}")
    named = sorted(name for name in top_level | set(SCRIPTS) if re.search(rf"(?<![\w.]){re.escape(name)}\b", step.args))
    if named:
        problems.append(f"the dependency install names project modules: {named}")
    if any(call["local"] for call in step.pip_calls):
        problems.append(f"the dependency install installs the project itself: {[call['argv'] for call in step.pip_calls]}")
    return problems


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Replay:
    return replay_dockerfile((REPO / "Dockerfile").read_text(), REPO, tmp_path_factory.mktemp("image"))


@needs_tomllib
def test_dependency_layer_needs_only_pyproject(image):
    assert dependency_layer_problems(image, REPO) == []
    step = next(step for step in image.steps if step.pip_calls)
    code_copy = next(i for i, s in enumerate(image.steps) if s.keyword == "COPY" and _words(s.args)[0] == ".")
    assert image.steps.index(step) < code_copy, "the dependencies must be installed before `COPY . .`"
    from setuptools.config.pyprojecttoml import read_configuration

    pyproject = read_configuration(step.workdir / "pyproject.toml", expand=False)
    installed = [requirement for call in step.pip_calls for requirement in call["requirements"]]
    assert installed == pyproject["project"]["dependencies"]


@needs_tomllib
def test_code_layer_installs_every_package_and_not_tests(image):
    local = [call for step in image.steps for call in step.pip_calls if call["local"]]
    assert len(local) == 1, f"one install of the project itself, got {local}"
    install = local[0]
    assert "--no-deps" in install["argv"], "the dependencies come from the cached layer"
    assert set(install["packages"]) == repository_packages(REPO)
    assert {"agents", "agents.ewc", "envs", "ewc_evaluation", "ewc_training", "ewc_experiments", "bench"} <= set(
        install["packages"]
    )
    assert not [name for name in install["packages"] if name.partition(".")[0] == "tests"]
    assert install["py_modules"] == [], "train.py, evaluate.py and sweep.py are scripts, not modules of the package"
    app = Path(install["cwd"])
    assert all((app / script).is_file() for script in SCRIPTS)
    assert (app / "configs" / "default.yaml").is_file()


def test_copy_of_a_missing_path_fails(tmp_path):
    dockerfile = "FROM scratch\nWORKDIR /app\nCOPY pyproject.toml no_such_file.txt ./\nRUN pip install -r no_such_file.txt\n"
    with pytest.raises(ReplayError, match="no_such_file.txt is not in the build context"):
        replay_dockerfile(dockerfile, REPO, tmp_path)


def test_the_old_dependency_layer_is_caught(tmp_path):
    """An image build that copies package files by hand before the dependency install."""
    dockerfile = textwrap.dedent("""\
        FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
        WORKDIR /app
        COPY pyproject.toml README.md ./
        COPY agents/__init__.py agents/__init__.py
        COPY envs/__init__.py envs/__init__.py
        RUN touch config.py train.py evaluate.py \\
            && pip install --no-cache-dir -e . \\
            && rm config.py train.py evaluate.py
        """)
    problems = dependency_layer_problems(replay_dockerfile(dockerfile, REPO, tmp_path), REPO)
    assert any("sees project code" in problem and "agents/__init__.py" in problem for problem in problems)
    assert any("installs the project itself" in problem for problem in problems)


def test_build_context_keeps_git_and_drops_outputs_and_caches(tmp_path):
    shutil.copy(REPO / ".dockerignore", tmp_path / ".dockerignore")
    kept = ["pyproject.toml", "train.py", "agents/__init__.py", "agents/ewc/__init__.py", ".git/HEAD", "configs/default.yaml"]
    dropped = [
        "runs/r1/run.json",
        "sweeps/s/plan.json",
        "bench_results/b.json",
        ".venv/bin/python",
        "agents/__pycache__/a.pyc",
        "ewc_atari.egg-info/PKG-INFO",
        ".pytest_cache/v",
        ".ruff_cache/c",
        "build/lib/x.py",
        "agents/x.pyc",
    ]
    for path in kept + dropped:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("")
    assert context_files(tmp_path) == {".dockerignore", *kept}
