"""The documentation stays true to the software: no words about how the work was organised, a
README of one screen and at most 200 lines, links and named files that exist, and every quoted
command's subcommand and flags known to the CLI or script it names."""

import contextlib
import importlib.util
import io
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: "session" in its ordinary sense (a pytest or Keras session) is fine
SESSION_OK = re.compile(
    r"pytest session|keras session|clear_session|scope=\"session\"|session fixture|"
    r"per session|session-scoped",
    re.IGNORECASE,
)
#: words about how the work was organised, and internal run names (t21, sm35)
FORBIDDEN = {
    "issue number": re.compile(r"\bissues?\s*#?\d+", re.IGNORECASE),
    "not done": re.compile(r"\bnot (yet )?done\b", re.IGNORECASE),
    "to-do": re.compile(r"\b(TODO|FIXME|XXX)\b"),
    "run name": re.compile(r"(?<![\w/.-])(?:t|sm)\d{2}(?:tta)?\b"),
}
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")
#: a file of the repository named in backquotes
NAMED_FILE = re.compile(
    r"`((?:tf_boneage|tests|benchmarks|training|docs|data_manifests|saved_models)/"
    r"[\w./-]+\.(?:py|md|yaml|csv|json))`"
)


def _tracked(*patterns: str) -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", *patterns],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [ROOT / p for p in out if (ROOT / p).is_file()]


def _docs() -> list[Path]:
    return _tracked("*.md")


def forbidden_words(text: str) -> list[str]:
    """``"line N: word"`` for each place ``text`` speaks of how the work was organised."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for m in re.finditer(r"session", line, re.IGNORECASE):
            context = line[max(0, m.start() - 12) : m.end() + 12]
            if not SESSION_OK.search(context):
                found.append(f"line {number}: {line.strip()[:80]!r} (session)")
        for name, pattern in FORBIDDEN.items():
            if pattern.search(line):
                found.append(f"line {number}: {line.strip()[:80]!r} ({name})")
    return found


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.DOTALL)
    return {slug(h) for h in re.findall(r"^#+\s+(.*)$", text, re.MULTILINE)}


def broken_links(path: Path) -> list[str]:
    """Relative links and named repository files of ``path`` that do not exist (a link's
    ``#anchor`` must be a heading of its target)."""
    text = path.read_text()
    problems = []
    for target in LINK.findall(text) + IMAGE.findall(text):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            problems.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{target}: no heading #{anchor} in {dest.name}")
    for name in NAMED_FILE.findall(text):
        if not (ROOT / name).exists():
            problems.append(f"`{name}`: no such file")
    return problems


def commands(text: str) -> list[str]:
    """Commands quoted in ``text``: lines of fenced code blocks (continuations joined, comments
    cut) and inline code spans that start with ``tf-boneage`` or ``python training/`` /
    ``python benchmarks/``."""
    found = []
    for block in re.findall(r"```(?:bash|sh|console)?\n(.*?)```", text, re.DOTALL):
        joined = re.sub(r"\s*\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = re.sub(r"\s#.*$", "", line).strip()
            found.append(line)
    found += re.findall(r"`((?:tf-boneage|python (?:training|benchmarks)/)[^`]*)`", text)
    starts = ("tf-boneage ", "python training/", "python benchmarks/")
    out = []
    for line in found:
        for start in starts:
            at = line.find(start)
            if at >= 0:
                out.append(line[at:].split(" && ")[0].split(" | ")[0])
                break
    return out


def _help_flags(main, argv: list[str]) -> set[str]:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.suppress(SystemExit):
        main([*argv, "--help"])
    return set(re.findall(r"(?<![\w-])(--[a-z][\w-]*)", buffer.getvalue()))


def _script_main(relpath: str):
    """A script's ``main``, imported as ``python SCRIPT`` would (its folder first on the path:
    the benchmarks import their ``common``)."""
    import sys

    path = ROOT / relpath
    spec = importlib.util.spec_from_file_location(f"_doc_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module.main


def unknown_in_command(command: str, cache: dict) -> list[str]:
    """The subcommand or flags of ``command`` its CLI or script does not have."""
    from tf_boneage import cli
    from tf_boneage.training import STAGES, stage_main

    words = re.sub(r"\"\$\([^)]*\)\"|\$\([^)]*\)", "X", command).split()
    if words[0] == "tf-boneage":
        rest = [w for w in words[1:] if w != "--verbose"]
        if not rest or rest[0].startswith("-"):
            return []
        sub = rest[0]
        parser = cli.build_parser()
        subs = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
        if sub not in subs.choices:
            return [f"no subcommand {sub!r}"]
        if sub == "train":
            stage = rest[1] if len(rest) > 1 else ""
            if stage.isupper():  # a placeholder: tf-boneage train STAGE ...
                return []
            if stage not in STAGES:
                return [f"no training stage {stage!r}"]
            key = f"train {stage}"
            if key not in cache:
                cache[key] = _help_flags(stage_main(stage), [])
            flags = cache[key]
        else:
            flags = {s for a in subs.choices[sub]._actions for s in a.option_strings}
    else:
        script = words[1]
        if not (ROOT / script).is_file():
            return [f"no script {script}"]
        if script not in cache:
            cache[script] = _help_flags(_script_main(script), [])
        flags = cache[script]
    used = {w.split("=")[0] for w in words if w.startswith("--")}
    return [f"no flag {f}" for f in sorted(used - flags)]


def test_no_words_about_how_the_work_was_organised():
    bad = {}
    for path in _tracked("*.md", "*.py", "*.yaml"):
        if path.name == "test_docs.py":
            continue
        found = forbidden_words(path.read_text())
        if found:
            bad[str(path.relative_to(ROOT))] = found[:5]
    assert not bad, bad


def test_the_readme_fits_in_200_lines_and_starts_with_the_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200, len(lines)
    head = "\n".join(lines[:40])
    assert 'pip install -e ".[dev]"' in head and "tf-boneage demo" in head
    assert "python -m pytest" in head and "tf-boneage predict" in head
    assert "MODEL_CARD.md" in head


def test_links_and_named_files_exist():
    bad = {str(p.relative_to(ROOT)): broken_links(p) for p in _docs()}
    bad = {k: v for k, v in bad.items() if v}
    assert not bad, bad


@pytest.mark.slow
def test_quoted_commands_exist_with_their_flags():
    cache: dict = {}
    bad = {}
    for path in _docs():
        for command in commands(path.read_text()):
            problems = unknown_in_command(command, cache)
            if problems:
                bad.setdefault(str(path.relative_to(ROOT)), []).append((command[:70], problems))
    assert not bad, bad


# the checks themselves, on hand-made text


def test_forbidden_words_known_answers():
    work, item = "sess" + "ion", "iss" + "ue"  # built from parts: this file is scanned too
    text = f"a pytest {work}\nthe twelfth {work} ran\nsee {item} 17\nrun t28 and sm35\nok t2x"
    found = forbidden_words(text)
    assert [f.split(":")[0] for f in found] == ["line 2", "line 3", "line 4"]
    assert "run name" in found[2]
    assert forbidden_words("keras.backend.clear_session()\nruns/table/x.md") == []


def test_slug_and_commands_known_answers():
    assert slug("The 90 % interval") == "the-90--interval"
    assert slug("Serve with `TF Serving`") == "serve-with-tf-serving"
    text = "```bash\ntf-boneage predict a.png \\\n    --sex F   # one film\nls\n```\nrun `tf-boneage demo --n 3`"
    assert commands(text) == ["tf-boneage predict a.png --sex F", "tf-boneage demo --n 3"]


def test_unknown_subcommands_and_flags_are_named():
    cache: dict = {}
    assert unknown_in_command("tf-boneage predict x.png --sex F --out r.csv", cache) == []
    assert unknown_in_command("tf-boneage predict x.png --sexx F", cache) == ["no flag --sexx"]
    assert unknown_in_command("tf-boneage fly", cache) == ["no subcommand 'fly'"]
    assert unknown_in_command("python training/nothing.py", cache) == [
        "no script training/nothing.py"
    ]


#: modules whose docstrings carry runnable examples (a user's first calls)
EXAMPLES = (
    "tf_boneage.models.unet",
    "tf_boneage.models.landmarks",
    "tf_boneage.models.region",
    "tf_boneage.models.orientation",
    "tf_boneage.training.config",
)


@pytest.mark.parametrize("name", EXAMPLES)
def test_the_docstring_examples_run(name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, result
