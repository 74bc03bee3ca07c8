"""The README and docs stay true: every command in them is one the project accepts, every file they
or the code name exists, and the README stays a short user guide."""

import re
import shlex
from pathlib import Path

import pytest

from fastgan.benchmark import build_parser as bench_parser
from fastgan.cli import build_parser
from fastgan.translation_cli import train_parser as translation_train_parser, wants_translation

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
DOCS = sorted((ROOT / "docs").glob("*.md"))
CODE = [p for d in ("fastgan", "kernels", "export", "bench") for p in sorted((ROOT / d).rglob("*.py"))]
TESTS = sorted((ROOT / "tests").rglob("*.py"))
MAKE_TARGETS = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))


def shell_commands(text: str) -> list[str]:
    """Each command line of the fenced bash blocks (comments and continuation lines joined)."""
    out = []
    for block in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", text, re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = re.sub(r"(^|\s)#.*$", "", line).strip()
            if line:
                out.append(line)
    return out


def check_command(line: str) -> None:
    """Raise AssertionError unless ``line`` is a command this project accepts as written."""
    words = shlex.split(line)
    env = 0
    while env < len(words) and re.match(r"^[A-Z_]+=", words[env]):   # VAR=value prefixes
        env += 1
    words = words[env:]
    if words[0] == "torchrun":   # torchrun [its options] -m fastgan ARGS
        words = words[words.index("-m"):]
    if words[0] in ("python", "python3", "-m") and "-m" in words[:2]:   # python -m MODULE ARGS
        module = words[words.index("-m") + 1]
        if module == "pip":
            return
        assert module == "fastgan", f"unknown module in {line!r}"
        words = words[words.index("-m") + 1:]
    if words[:2] == ["fastgan", "bench"]:   # as the CLI does: the benchmark runner owns its flags
        try:
            bench_parser().parse_args(words[2:])
        except SystemExit as e:
            raise AssertionError(f"fastgan bench refuses {line!r} (exit {e.code})")
    elif words[:2] == ["fastgan", "train"] and wants_translation(words[2:]):   # pix2pix / CycleGAN flags
        try:
            translation_train_parser().parse_args(words[2:])
        except SystemExit as e:
            raise AssertionError(f"fastgan refuses {line!r} (exit {e.code})")
    elif words[0] == "fastgan":
        try:
            build_parser().parse_args(words[1:])
        except SystemExit as e:
            raise AssertionError(f"fastgan refuses {line!r} (exit {e.code})")
    elif words[0] == "make":
        assert all(t in MAKE_TARGETS for t in words[1:] if "=" not in t), f"no such make target in {line!r}"
    elif words[0] == "bash" and words[1].endswith(".sh"):
        assert (ROOT / words[1]).is_file(), f"{line!r}: {words[1]} does not exist"
    elif words[0] in ("python", "python3") and words[1].endswith(".py"):
        script = ROOT / words[1]
        assert script.is_file(), f"{line!r}: {words[1]} does not exist"
        source = script.read_text()
        for flag in (w.split("=")[0] for w in words[2:] if w.startswith("--")):
            assert f'"{flag}"' in source, f"{line!r}: {words[1]} has no option {flag}"
    elif words[0] in ("pip", "cd", "ls", "tensorboard", "export"):
        pass
    else:
        raise AssertionError(f"unknown command in a fenced shell block: {line!r}")


@pytest.mark.parametrize("doc", ["README.md"] + [f"docs/{p.name}" for p in DOCS])
def test_every_shell_command_is_one_the_project_accepts(doc):
    lines = shell_commands((ROOT / doc).read_text())
    assert lines or doc != "README.md"
    for line in lines:
        check_command(line)


def test_the_check_rejects_what_the_project_does_not_accept():
    for bad in ("fastgan train --no_such_flag 3", "fastgan sampel --run x", "fastgan train --task pix2pix --no_such 1", "fastgan bench --no_such 1", "python -m fastgan train --bad 1",
                "make no-such-target", "python bench/no_such_script.py", "python bench/contention.py --nope 1",
                "rm -rf runs"):
        with pytest.raises(AssertionError):
            check_command(bad)


def test_readme_is_a_short_guide_that_starts_with_the_two_commands():
    assert len(README.splitlines()) < 200
    first_block = re.search(r"```(?:bash)?\n(.*?)```", README, re.S).group(1)
    assert README.index("```") < README.index("\n## ")       # before any section
    assert re.search(r"^make demo\b", first_block, re.M) and re.search(r"^make test\b", first_block, re.M)
    assert {"demo", "test", "install"} <= MAKE_TARGETS


def test_ci_runs_the_test_command_the_readme_gives():
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"\bmake test\b", ci)


LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
PATH = re.compile(r"(?<![\w/.-])((?:docs|bench|tests|fastgan|kernels|export)/[\w./-]*\.(?:md|py|json|png|npz))")


@pytest.mark.parametrize("doc", ["README.md"] + [f"docs/{p.name}" for p in DOCS])
def test_links_point_at_files_that_exist(doc):
    path = ROOT / doc
    prose = re.sub(r"```.*?```|`[^`\n]*`", "", path.read_text(), flags=re.S)   # code is not a link
    for target in LINK.findall(prose):
        if "://" in target:
            continue
        assert (path.parent / target).exists(), f"{doc} links to {target}, which does not exist"


def test_files_named_in_code_and_docs_exist():
    missing = []
    for path in [ROOT / "README.md", *DOCS, *CODE]:   # tests may name absent files on purpose
        for name in PATH.findall(path.read_text()):
            if any(c in name for c in "<>*{}") or name.startswith("bench/results/"):   # results: often outputs
                continue
            if not (ROOT / name).exists():
                missing.append(f"{path.relative_to(ROOT)}: {name}")
    assert not missing, "files named but absent:\n" + "\n".join(missing)


def test_nothing_points_at_notes_outside_the_repository():
    notes = "DESIGN" + ".md"   # spelt apart so this file does not name it
    for path in [ROOT / "README.md", *DOCS, *CODE, *TESTS]:
        assert notes not in path.read_text(), f"{path.relative_to(ROOT)} refers to {notes}"
