"""Build hook: the numbered notebooks travel in the wheel as package data (``wsslib/notebooks/``).

Everything else is declared in pyproject.toml. The notebooks stay at the top of the repository
(``notebooks/NN_*.ipynb``, where readers and ``make reproduce`` expect them); a wheel install
(``pip install .``, not editable) has no repository, so ``build_py`` copies them into the built
package, where :func:`wsslib.apps.reproduce.default_notebook_dir` finds them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


class build_py_with_notebooks(build_py):
    """``build_py`` plus the numbered notebooks copied to ``<build_lib>/wsslib/notebooks/``."""

    def run(self) -> None:
        super().run()
        notebooks = sorted((HERE / "notebooks").glob("[0-9][0-9]_*.ipynb"))
        if not notebooks:
            raise SystemExit(f"setup.py: no numbered notebooks (NN_*.ipynb) in {HERE / 'notebooks'}: "
                             "the wheel would ship without them")
        dest = Path(self.build_lib) / "wsslib" / "notebooks"
        dest.mkdir(parents=True, exist_ok=True)
        for nb in notebooks:
            shutil.copy2(nb, dest / nb.name)


setup(cmdclass={"build_py": build_py_with_notebooks})
