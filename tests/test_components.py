"""The pinned Go toolchain: read from proxysuite/data/components/go.mod, fetched for real when `go` is another release.

No cluster; the fetch needs the Go module proxy (about 70 MB, 15 s here) and any `go` to run
`go mod download` with, as on a fresh machine after scripts/bootstrap installed Debian's golang-go.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from proxysuite.cluster.local import components
from proxysuite.errors import SuiteError

GO_MOD = components.module_dir() / "go.mod"


def with_toolchain(tmp_path: Path, line: str) -> Path:
    mod = tmp_path / "mod"
    mod.mkdir()
    (mod / "go.mod").write_text(GO_MOD.read_text().replace(f"toolchain {components.read_pins().toolchain}", line))
    return mod


def test_pins_name_an_exact_toolchain_of_the_go_minor():
    pins = components.read_pins()
    assert pins.toolchain.startswith(f"go{pins.go_minor}.")
    assert pins.toolchain.count(".") == 2, "an exact release, not a minor: the build must be reproducible"


@pytest.mark.parametrize("line", ["", "toolchain go1.27.1", "toolchain go1.26"])
def test_pins_refuse_a_missing_or_inexact_toolchain(tmp_path: Path, line: str):
    with pytest.raises(SuiteError, match="exact toolchain"):
        components.read_pins(with_toolchain(tmp_path, line))


def test_without_any_go_the_error_names_bootstrap(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("PROXYSUITE_CACHE_DIR", str(tmp_path / "cache"))
    pins = components.read_pins()
    assert components.find_go(pins) is None
    with pytest.raises(SuiteError, match="scripts/bootstrap"):
        components.install_go(pins, progress=lambda m: None)


@pytest.mark.skipif(not shutil.which("go"), reason="no `go` on PATH to fetch the pinned toolchain with")
def test_fetches_the_pinned_toolchain_with_another_go(tmp_path: Path, monkeypatch):
    pins = components.read_pins()
    other = shutil.which("go")
    # Only some go on PATH (any release), an empty cache: what scripts/bootstrap leaves on a fresh machine.
    bare = tmp_path / "bin"
    bare.mkdir()
    (bare / "go").symlink_to(other)
    monkeypatch.setenv("PATH", f"{bare}{os.pathsep}/usr/bin{os.pathsep}/bin")
    monkeypatch.setenv("PROXYSUITE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("GOROOT", raising=False)
    assert components.find_go(pins) in (None, bare / "go")
    said = []
    go = components.install_go(pins, progress=said.append)
    assert go == tmp_path / "cache" / "go" / pins.toolchain / "bin" / "go"
    assert components.find_go(pins) == go, "the fetched toolchain is not found again"
    assert not [p for p in go.parents[2].iterdir() if p.is_dir() and p.name.startswith(".")], "the download's temporary module cache was left behind"
    assert any("fetching Go" in m for m in said) and any("ready" in m for m in said)
    # It compiles and runs a program (its tools in pkg/tool got their exec bits).
    (tmp_path / "hello").mkdir()
    (tmp_path / "hello" / "go.mod").write_text("module hello\n\ngo 1.22\n")
    (tmp_path / "hello" / "main.go").write_text('package main\n\nimport "runtime"\n\nfunc main() { println(runtime.Version()) }\n')
    proc = subprocess.run([str(go), "run", "."], cwd=tmp_path / "hello", capture_output=True, text=True, timeout=300,
                          env={**os.environ, "GOTOOLCHAIN": "local", "CGO_ENABLED": "0"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == pins.toolchain


def test_pytest_puts_the_venv_kubectl_first_on_path(tmp_path: Path, monkeypatch):
    from proxysuite import plugin

    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    monkeypatch.setattr(sys, "executable", str(venv_bin / "python"))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    plugin._venv_bin_on_path()
    assert os.environ["PATH"] == "/usr/bin:/bin", "no kubectl in the venv: PATH stays as it was"
    (venv_bin / "kubectl").symlink_to("/bin/true")
    plugin._venv_bin_on_path()
    plugin._venv_bin_on_path()
    assert os.environ["PATH"] == f"{venv_bin}:/usr/bin:/bin"
