"""The documentation site builds with `mkdocs build --strict`, and its API pages document
every public name: the top level of `arhmm_eqx`, `arhmm_eqx.workflow.__all__` and the compat
modules. A new public name without a `::: path` entry under `docs/api/` fails here.

The notebooks are rendered as stored, not executed, so the build takes seconds.
"""

import importlib
import os
import pathlib
import re
import subprocess
import sys
import types

import pytest


ROOT = pathlib.Path(__file__).resolve().parent.parent
COMPAT_MODULES = ("initialize", "gibbs", "log_prob", "generate")


def public_names() -> dict[str, set[str]]:
    """Each public object, by the paths under which the API pages may document it.

    An object re-exported by `arhmm_eqx.compat` counts as documented under either path.
    """
    import arhmm_eqx
    import arhmm_eqx.compat
    import arhmm_eqx.workflow

    names = {}
    for name in dir(arhmm_eqx):
        if not name.startswith("_") and not isinstance(getattr(arhmm_eqx, name), types.ModuleType):
            names[f"arhmm_eqx.{name}"] = {f"arhmm_eqx.{name}"}
    for name in arhmm_eqx.workflow.__all__:
        names[f"arhmm_eqx.workflow.{name}"] = {f"arhmm_eqx.workflow.{name}"}
    for module_name in COMPAT_MODULES:
        module = importlib.import_module(f"arhmm_eqx.compat.{module_name}")
        for name, value in vars(module).items():
            if not name.startswith("_") and callable(value) and getattr(value, "__module__", None) == module.__name__:
                names[f"{module.__name__}.{name}"] = {f"{module.__name__}.{name}", f"arhmm_eqx.compat.{name}"}
    for name in dir(arhmm_eqx.compat):
        if not name.startswith("_") and not isinstance(getattr(arhmm_eqx.compat, name), types.ModuleType):
            paths = {f"arhmm_eqx.compat.{name}"} | {f"arhmm_eqx.compat.{m}.{name}" for m in COMPAT_MODULES}
            names.setdefault(f"arhmm_eqx.compat.{name}", paths)
    return names


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        pytest.fail(f"`mkdocs build --strict` failed (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
    return out


def test_site_builds_strict(site):
    assert (site / "index.html").is_file()
    assert (site / "api" / "model" / "index.html").is_file()


def test_every_public_name_is_on_an_api_page(site):
    # mkdocstrings gives each documented object an HTML id equal to the path it was
    # documented under (the public path, also for names the package imports lazily).
    documented = set()
    for page in (site / "api").rglob("index.html"):
        documented |= set(re.findall(r'id="(arhmm_eqx[\w.]*)"', page.read_text(encoding="utf-8")))
    names = public_names()
    assert len(names) > 60  # the introspection found the package's names
    missing = sorted(name for name, paths in names.items() if not paths & documented)
    assert not missing, (
        "public names missing from the API reference; add a `::: <public path>` entry to a page "
        f"under docs/api/ (and to the nav of mkdocs.yml for a new page): {missing}"
    )


def test_api_pages_use_public_paths():
    # Private modules may move; the pages name objects only by their public paths.
    for page in (ROOT / "docs" / "api").rglob("*.md"):
        for path in re.findall(r"^::: (\S+)", page.read_text(encoding="utf-8"), flags=re.M):
            assert not any(part.startswith("_") for part in path.split(".")), f"{page.name}: `::: {path}`"


def test_getting_started_repeats_the_readme_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)```", quick_start, flags=re.S)
    assert len(commands) == 2
    page = (ROOT / "docs" / "getting-started.md").read_text(encoding="utf-8")
    for command in commands:
        assert f"```bash\n{command}```" in page, f"docs/getting-started.md lacks the README command {command!r}"
