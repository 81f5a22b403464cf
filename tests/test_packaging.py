"""Ready for PyPI: metadata, the LICENSE in both distributions, and shell completion."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from click.shell_completion import ShellComplete

from mcp_keys.cli import cli
from tests.conftest import FileKeys

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(out),
                    str(ROOT)], check=True, capture_output=True, timeout=600)
    return out


def test_wheel_and_sdist_carry_the_license_and_metadata(dists: Path) -> None:
    (wheel,) = dists.glob("*.whl")
    (sdist,) = dists.glob("*.tar.gz")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
        assert "mcp_keys/gateway/interceptor/node_preload.js" in names, \
            "run --proxy's Node shim ships in the wheel"
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA")))
    text = metadata.decode()
    for line in ("License-Expression: Apache-2.0", "Classifier: Typing :: Typed",
                 "Classifier: Programming Language :: Python :: 3.13",
                 "Classifier: Topic :: Security", "Provides-Extra: postgres"):
        assert line in text, line
    assert "Keywords:" in text and "mcp_keys/py.typed" in names
    with tarfile.open(sdist) as archive:
        assert any(m.name.endswith("/LICENSE") for m in archive.getmembers())
    assert "Apache License" in (ROOT / "LICENSE").read_text()


@pytest.mark.parametrize(("shell", "marker"), [("bash", "_mcp_keys_completion"),
                                               ("zsh", "#compdef mcp-keys"),
                                               ("fish", "complete --no-files --command mcp-keys")])
def test_completion_scripts(run: object, shell: str, marker: str) -> None:
    from click.testing import CliRunner

    result = CliRunner().invoke(cli, ["completion", shell])
    assert result.exit_code == 0 and marker in result.stdout


def test_key_ids_complete_from_the_store(manager: FileKeys) -> None:
    ids = {manager.create(name).record.id: name for name in ("alpha", "beta")}
    complete = ShellComplete(cli, {}, "mcp-keys", "_MCP_KEYS_COMPLETE")
    items = complete.get_completions(["--store", str(manager.store.path), "revoke"], "")
    assert {(i.value, i.help) for i in items} == {(k, f"{n} (active)") for k, n in ids.items()}
    first = next(iter(ids))
    narrowed = complete.get_completions(["--store", str(manager.store.path), "show"], first[:5])
    assert [i.value for i in narrowed] == [first]
    commands = complete.get_completions([], "ro")
    assert [i.value for i in commands] == ["rotate"]
    manager.store.path.write_text("{broken")
    assert complete.get_completions(["--store", str(manager.store.path), "revoke"], "") == []
