"""What an installed distribution promises: public names, one version everywhere, typing marker, licence."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGES = ("convbert_common", "convbert_pt", "convbert_tf", "convbert_tools")


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_reports_the_one_version_of_version_py():
    import convbert_common
    import convbert_pt
    import convbert_tf
    import convbert_tools
    from convbert_common.version import __version__

    assert [m.__version__ for m in (convbert_common, convbert_pt, convbert_tf, convbert_tools)] == [__version__] * 4
    project = _pyproject()
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "convbert_common.version.__version__"}


def test_convbert_version_flag_prints_the_version():
    from convbert_common.version import __version__

    out = subprocess.run([sys.executable, "-m", "convbert_tools.cli", "--version"], capture_output=True, text=True,
                         cwd=ROOT, env={"PYTHONPATH": str(ROOT / "src"), "PATH": ""}, check=True)
    assert out.stdout.strip() == f"convbert {__version__}"


@pytest.mark.parametrize("package", ["convbert_pt", "convbert_tf"])
def test_framework_packages_export_config_tokenizers_and_models(package):
    module = __import__(package)
    from convbert_common.config import ConvBertConfig
    from convbert_common.tokenizer import ConvBertTokenizer, ConvBertTokenizerFast

    assert module.ConvBertConfig is ConvBertConfig
    assert module.ConvBertTokenizerFast is ConvBertTokenizerFast and module.ConvBertTokenizer is ConvBertTokenizer
    assert module.ConvBertForSequenceClassification.__module__ == f"{package}.modeling"
    for name in ("ConvBertConfig", "ConvBertTokenizerFast", "ConvBertTokenizer", "__version__"):
        assert name in module.__all__


def test_convbert_common_exports_config_and_tokenizers_without_importing_them_eagerly():
    code = ("import sys, convbert_common as c; assert 'convbert_common.tokenizer' not in sys.modules; "
            "from convbert_common import ConvBertConfig, ConvBertTokenizerFast, ConvBertTokenizer; "
            "import convbert_common.config as cfg, convbert_common.tokenizer as tok; "
            "assert ConvBertConfig is cfg.ConvBertConfig and ConvBertTokenizerFast is tok.ConvBertTokenizerFast; "
            "assert 'ConvBertTokenizer' in dir(c)")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={"PYTHONPATH": str(ROOT / "src"), "PATH": ""},
                   check=True)
    import convbert_common

    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        convbert_common.Nope  # noqa: B018


def test_each_package_ships_a_py_typed_marker():
    data = _pyproject()["tool"]["setuptools"]["package-data"]
    for package in PACKAGES:
        assert (ROOT / "src" / package / "py.typed").is_file(), package
        assert "py.typed" in data[package], package


def test_licence_is_pep_639_apache_2_with_the_license_file():
    project = _pyproject()["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
    assert not any(c.startswith("License ::") for c in project["classifiers"])  # PEP 639: the expression only
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    requires = _pyproject()["build-system"]["requires"]
    assert any(r.startswith("setuptools>=") and int(r.split(">=")[1].split(",")[0]) >= 77 for r in requires)
