"""The README and docs/ agree with the code on everything a machine can check (no cluster needed).

What is checked, each parsed from the text rather than listed here:

* the README's options table and the option table in ``proxysuite/config.py`` name the same flags;
* every ``pytest`` / ``proxysuite`` command in a code block parses: subcommands exist and each ``--flag``
  is one that command accepts (``proxysuite ... --help``, ``pytest --help`` with both suites loaded);
* every ``make TARGET`` names a Makefile target, and ``VAR=`` a variable the Makefile reads;
* every repository path and relative link exists (``<placeholders>`` match anything), every ``#anchor``
  names a heading;
* pinned versions (Kubernetes, etcd, the Go toolchain) match ``proxysuite/data/components/go.mod``;
* counts and sizes the docs state: uniformity rows per mode, the uniformity sample size;
* the cold and warm set-up times are stated the same way wherever they are stated.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

from proxysuite import cli
from proxysuite.cluster.local import components
from proxysuite.config import DEFAULT_K8S_VERSION, OPTIONS
from proxysuite.conformance.rows import Row
from proxysuite.probes.analysis import CONFIRMATION_FACTOR, samples_for_uniformity

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
TEXTS = [README, *DOCS]
NUMBERS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve".split())}


def text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def prose(path: Path) -> str:
    """The text with every run of whitespace as one space, so a claim may wrap across lines."""
    return " ".join(text(path).split())


def code_blocks(doc: str) -> list[str]:
    return re.findall(r"^```[^\n]*\n(.*?)^```", doc, re.M | re.S)


def command_lines(doc: str) -> list[list[str]]:
    """Each shell command in the code blocks, as argv, with sudo, paths to binaries and trailing comments dropped."""
    out = []
    for block in code_blocks(doc):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            for part in re.split(r"\s*(?:;|&&|\|\|?)\s*", line):
                part = re.sub(r"^eval \"\$\(", "", part).rstrip(')"')
                words = part.split()
                while words and (words[0] == "sudo" or "=" in words[0] and not words[0].startswith("-")):
                    words = words[1:]
                if words:
                    words[0] = words[0].rsplit("/", 1)[-1]
                    out.append(words)
    return out


def flags(words: list[str]) -> list[str]:
    return [w.split("=", 1)[0] for w in words if re.fullmatch(r"--[a-z][a-z0-9-]*(=.*)?", w)]


# ---------------------------------------------------------------------------------------------- options


def readme_options_table() -> set[str]:
    section = text(README).split("\n## Options", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `--")]
    assert rows, "README: the options table under ## Options is gone"
    return {flag for row in rows for flag in re.findall(r"`(--[a-z0-9-]+)`", row.split("|")[1])}


def test_options_table_matches_config():
    documented, defined = readme_options_table(), {f"--{o.name}" for o in OPTIONS}
    assert documented - defined == set(), "README options table names flags that proxysuite/config.py does not define"
    assert defined - documented == set(), "proxysuite/config.py defines flags the README options table does not document"


def test_options_table_defaults_match_config():
    section = text(README).split("\n## Options", 1)[1].split("\n## ", 1)[0]
    for row in section.splitlines():
        cells = [c.strip() for c in row.split("|")[1:-1]]
        if len(cells) < 2 or not cells[0].startswith("`--") or "," in cells[0]:
            continue
        opt = next((o for o in OPTIONS if f"`--{o.name}`" == cells[0]), None)
        if opt is None:
            continue  # test_options_table_matches_config names it
        shown = re.fullmatch(r"`([^`]*)`(?: \(.*\))?", cells[1])
        if shown and opt.default is not None and not opt.flag:
            assert shown.group(1) == str(opt.default), f"README says {cells[0]} defaults to {shown.group(1)}, the code to {opt.default}"


# ---------------------------------------------------------------------------------------------- commands


@lru_cache(maxsize=None)
def pytest_flags() -> frozenset[str]:
    # Every suite on the command line, so their conftest options (--perf-scales, --migrate-to, ...) are registered too.
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "suites/conformance", "suites/perf", "suites/migration", "--help"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return frozenset(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", proc.stdout))


def proxysuite_help(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        cli.main([*argv, "--help"])
    assert exc.value.code == 0, f"`proxysuite {' '.join(argv)} --help` failed"
    return capsys.readouterr().out


def documented_commands(tool: str) -> list[tuple[Path, list[str]]]:
    return [(path, words) for path in TEXTS for words in command_lines(text(path)) if words[0] == tool]


def test_the_docs_show_commands():
    assert documented_commands("pytest") and documented_commands("proxysuite") and documented_commands("make")


@pytest.mark.parametrize("path", TEXTS, ids=lambda p: p.name)
def test_pytest_commands_use_existing_flags(path: Path):
    for words in command_lines(text(path)):
        if words[0] == "pytest":
            unknown = set(flags(words)) - pytest_flags()
            assert not unknown, f"{path.name}: `{' '.join(words)}` uses flags pytest does not know: {sorted(unknown)}"


def test_plugins_the_docs_turn_off_leave_the_suites_loadable():
    # `-p no:xdist` once failed at start-up: an xdist-only hook of the suite's plugin was not marked optional.
    turned_off = sorted({w[i + 1] for _, w in documented_commands("pytest") for i in range(len(w) - 1) if w[i] == "-p"})
    assert "no:xdist" in turned_off
    for plugin in turned_off:
        # A real (tiny) run: pluggy checks the hooks when the session starts, not for --help or --collect-only.
        proc = subprocess.run([sys.executable, "-m", "pytest", "-p", plugin, "-p", "no:cacheprovider", "-q",
                               "tests/test_perf_npl_judge.py"], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and " passed" in proc.stdout, f"-p {plugin}: {(proc.stdout + proc.stderr)[-1500:]}"


@pytest.mark.parametrize("path", TEXTS, ids=lambda p: p.name)
def test_proxysuite_commands_parse(path: Path, capsys):
    top = cli.build_parser()
    for words in command_lines(text(path)):
        if words[0] != "proxysuite":
            continue
        argv = words[1:]
        if argv[:1] in (["report"], ["perf"]):
            # These hand the rest to their own parser: check the subcommand and its flags against its --help.
            sub = {"report": "compare-modes", "perf": "run"}[argv[0]]
            assert argv[1:2] == [sub], f"{path.name}: `{' '.join(words)}`: `proxysuite {argv[0]}` takes `{sub}`"
            known = set(re.findall(r"(--[a-z][a-z0-9-]*)", proxysuite_help(argv[:2], capsys)))
            unknown = set(flags(argv)) - known
            assert not unknown, f"{path.name}: `{' '.join(words)}` uses flags `proxysuite {' '.join(argv[:2])}` lacks: {sorted(unknown)}"
            continue
        try:
            top.parse_args(argv)
        except SystemExit:
            pytest.fail(f"{path.name}: `{' '.join(words)}` does not parse: {capsys.readouterr().err.strip()}")
        # argparse also accepts abbreviations (--node for --nodes): the docs must spell flags out.
        depth = 2 if len(argv) > 1 and not argv[1].startswith("-") else 1  # `proxysuite kind stop-engine --force`
        known = set(re.findall(r"(--[a-z][a-z0-9-]*)", proxysuite_help(argv[:depth], capsys)))
        unknown = set(flags(argv)) - known
        assert not unknown, f"{path.name}: `{' '.join(words)}` uses flags `proxysuite {' '.join(argv[:depth])}` lacks: {sorted(unknown)}"


def makefile() -> str:
    return text(ROOT / "Makefile")


@pytest.mark.parametrize("path", TEXTS, ids=lambda p: p.name)
def test_make_targets_exist(path: Path):
    targets = set(re.findall(r"^([a-z][\w-]*):", makefile(), re.M))
    variables = set(re.findall(r"^([A-Z_]+)\s*\??=", makefile(), re.M))
    for words in command_lines(text(path)) + [w.split() for w in re.findall(r"`((?:sudo )?make [^`]*)`", text(path))]:
        words = [w for w in words if w != "sudo"]
        if words[0] != "make":
            continue
        for word in words[1:]:
            if "=" in word:
                assert word.split("=")[0] in variables, f"{path.name}: `{' '.join(words)}`: the Makefile reads no {word.split('=')[0]}"
            elif not word.startswith("-") and word != "...":
                assert word in targets, f"{path.name}: `{' '.join(words)}`: the Makefile has no target {word}"


# ---------------------------------------------------------------------------------------------- paths


TOP_LEVEL = sorted(p.name for p in ROOT.iterdir() if p.name not in {".git", ".venv", "reports"} and not p.name.startswith(".pytest"))


def repo_paths(doc: str) -> set[str]:
    """Tokens that start with one of the repository's top-level entries, wherever they appear."""
    alt = "|".join(re.escape(n) for n in TOP_LEVEL)
    found = set(re.findall(rf"(?<![\w./~-])((?:{alt})(?:/[\w.<>*-]+)*/?)(?![\w-])", doc))
    # A bare word like "tests" or "docs" in prose is not a path; a name with a dot or slash is.
    return {p.split("::")[0] for p in found if "/" in p or "." in p}


def exists(path: str) -> bool:
    pattern = re.sub(r"<[^>]+>", "*", path.rstrip("/"))
    return any(ROOT.glob(pattern)) if "*" in pattern else (ROOT / pattern).exists()


# Paths the docs name on purpose that are not in this repository (a citation of another project's file,
# an example of a file you would add). Each must still be named, and still be absent, or it leaves this list.
NOT_HERE = {
    ("conformance.md", ".github/workflows/k8s-kind-network-e2e.yaml"): "Cilium's repository, cited as a source",
    ("extending.md", "proxysuite/cluster/minikube.py"): "the example of a provider you would add",
    ("kind-offline.md", "proxysuite/kind-node"): "the name of the node image the build tags, not a path",
    ("kind-offline.md", "proxysuite/cilium"): "the name of the agent image build-cilium tags, not a path",
    ("kind-offline.md", "proxysuite/cilium-operator-generic"): "the name of the operator image build-cilium tags",
}


@pytest.mark.parametrize("path", TEXTS, ids=lambda p: p.name)
def test_named_paths_exist(path: Path):
    doc = text(path)
    paths = repo_paths(doc)
    assert path is not README or len(paths) > 10, "the path scan finds (almost) nothing: is the pattern broken?"
    missing = sorted(p for p in paths if not exists(p) and (path.name, p) not in NOT_HERE)
    assert not missing, f"{path.name} names files that do not exist: {missing}"


def test_not_here_list_is_current():
    for (doc, name), why in NOT_HERE.items():
        assert name in repo_paths(text(ROOT / "docs" / doc)), f"docs/{doc} no longer names {name}: drop it from NOT_HERE"
        assert not exists(name), f"{name} exists now ({why} no longer holds): drop it from NOT_HERE"


def slug(heading: str) -> str:
    # GitHub's anchors: lower case, punctuation dropped, spaces to hyphens.
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("path", TEXTS, ids=lambda p: p.name)
def test_links_resolve(path: Path):
    doc = text(path)
    for target in re.findall(r"\]\(([^)\s]+)\)", doc):
        if re.match(r"[a-z]+://", target):
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        assert dest.exists(), f"{path.name}: link to {target}: no such file"
        if anchor and dest.suffix == ".md":
            anchors = {slug(h) for h in re.findall(r"^#+ (.*)$", text(dest), re.M)}
            assert anchor in anchors, f"{path.name}: link to {target}: {dest.name} has no heading with that anchor"


def test_bare_test_file_names_exist():
    known = {p.name for p in ROOT.glob("*/**/test_*.py")}
    for path in TEXTS:
        for name in re.findall(r"(?<![/\w])(test_\w+\.py)", text(path)):
            assert name in known, f"{path.name} names {name}, which is in neither tests/ nor suites/"


def test_report_files_named_as_written():
    # The compare-modes report's files, as proxysuite/report/compare.py writes them.
    source = text(ROOT / "proxysuite" / "report" / "compare.py")
    written = set(re.findall(r'out / "([\w.-]+\.(?:html|md))"', source))
    assert written, "proxysuite/report/compare.py: no output file names found"
    for path in TEXTS:
        for name in re.findall(r"`([\w-]+\.html)`", text(path)):
            assert name in written, f"{path.name} names {name}; the compare-modes report writes {sorted(written)}"


# ---------------------------------------------------------------------------------------------- numbers


def go_mod() -> str:
    return text(ROOT / "proxysuite" / "data" / "components" / "go.mod")


def test_pinned_versions_match_go_mod():
    pins = components.read_pins()
    readme = prose(README)
    etcd = re.search(r"go\.etcd\.io/etcd/server/v3 v(\S+)", go_mod()).group(1)
    assert DEFAULT_K8S_VERSION == pins.kubernetes, "proxysuite/config.py's DEFAULT_K8S_VERSION differs from proxysuite/data/components/go.mod"
    stated_k8s = set(re.findall(r"Kubernetes \*\*(v[\d.]+)\*\*", readme)) | set(re.findall(r"kube-proxy (v\d+\.\d+\.\d+)", readme))
    assert stated_k8s == {pins.kubernetes}, f"README states Kubernetes {stated_k8s}, go.mod pins {pins.kubernetes}"
    assert re.findall(r"etcd \*\*([\d.]+)\*\*", readme) == [etcd], f"README's etcd version differs from go.mod's {etcd}"
    stated_go = set(re.findall(r"\bGo (?:toolchain )?\*\*(go?[\d.]+)\*\*", readme))
    assert stated_go == {pins.toolchain}, f"README states Go {stated_go}, go.mod's toolchain line pins {pins.toolchain}"


def test_components_docs_name_every_component():
    section = text(README).split("### Local provider", 1)[1].split("\n### ", 1)[0]
    for name in components.PACKAGES:
        assert name in section, f"README's Local provider section does not mention {name}, which bootstrap builds"


def suite_rows() -> list[Row]:
    rows = []
    for path in sorted((ROOT / "suites" / "conformance").glob("test_*.py")):
        spec = importlib.util.spec_from_file_location(f"_readme_check_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for value in vars(module).values():
            items = value if isinstance(value, (list, tuple)) else [value]
            rows += [r for r in items if isinstance(r, Row)]
    return rows


def test_uniformity_row_count():
    doc = prose(ROOT / "docs" / "conformance.md")
    claims = re.findall(r"\b(\w+) (?:such |uniformity )?rows per mode", doc)
    assert claims, "docs/conformance.md no longer states how many uniformity rows a mode has"
    for mode in ("iptables", "nftables"):
        count = sum(1 for r in suite_rows() if "UNIFORM" in str(r.expectation_for(mode)).split("+"))
        for claim in claims:
            assert NUMBERS.get(claim, claim) in (count, str(count)), f"docs/conformance.md: {claim} uniformity rows per mode; {mode} has {count}"


def test_uniformity_sample_sizes():
    doc = prose(ROOT / "docs" / "conformance.md")
    stated = re.findall(r"\((\d+) for (\d+) backends\)", doc)
    assert stated, "docs/conformance.md no longer states the uniformity sample size"
    for n, k in stated:
        assert int(n) == samples_for_uniformity(int(k)), f"docs say {n} connections for {k} backends"
        confirm = re.search(rf"twice as large \((\d+)\)", doc)
        assert confirm and int(confirm.group(1)) == int(n) * CONFIRMATION_FACTOR


def claims(pattern: str) -> dict[str, set[str]]:
    return {p.name: set(re.findall(pattern, prose(p))) for p in TEXTS if re.search(pattern, prose(p))}


def test_warm_start_stated_once():
    # "a cluster starts in about 5 s" in one place and "6 s" in another is how this file began.
    found = claims(r"(?:start|starts) (?:a cluster )?in about ([\d.]+) ?s\b")
    assert found, "README/docs no longer state how fast a warm local cluster starts"
    assert len(set().union(*found.values())) == 1, f"warm start stated differently: {found}"


def test_cold_setup_stated_once():
    readme = prose(README)
    total = re.findall(r"\*\*Cold\*\*.*? about (\d+) min setting up", readme)
    assert total, "README no longer states the measured cold set-up time (**Cold** ... about N min setting up)"
    build = set(re.findall(r"about (\d+) min of it building the components", readme))
    assert build, "README no longer states how long the components take to build"
    assert int(total[0]) >= max(map(int, build)), "README: the component build takes longer than the whole set-up"
    # The progress messages a user watches during that build say the same.
    for path in (ROOT / "proxysuite" / "cluster" / "local" / "components.py", ROOT / "scripts" / "bootstrap"):
        said = set(re.findall(r"about (\d+) min", prose(path)))
        assert said == build, f"{path.name} says the build takes about {said} min, README {build}"
