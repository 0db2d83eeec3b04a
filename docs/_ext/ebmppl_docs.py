"""What the ebmppl site needs beyond Sphinx's own extensions, at build time.

- ``copy_tutorials``: Sphinx reads sources under ``docs/`` only, so the
  notebooks of the top-level ``tutorials/`` folder (and their images) are
  mirrored into ``docs/tutorials/`` (gitignored) when a build starts.
- ``write_module_pages``: the reference of every module of the package, one
  page per sub-package under ``docs/api/modules/`` (gitignored), generated
  from the import tree, so that a docstring's reference to an internal name
  (``CoreState``, ``TrainerOptions``) has a target. A name documented on a
  public page (``ebmppl.numpyro.FlowMCMC``) is not documented again.
- ``resolve_by_identity``: a reference to an ebmppl name that is not
  documented under that name (``ebmppl.numpyro.flows.default_flow``, or
  ``TrainedPotential`` inside a docstring of ``ebmppl.numpyro.load_potential``)
  is resolved to the page of the same Python object, as the docstring's own
  module sees it. A name that does not exist stays a broken reference.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import shutil
from pathlib import Path

from docutils import nodes
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.pycode import ModuleAnalyzer

__all__ = ["copy_tutorials", "write_module_pages", "setup"]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".svg"}
PUBLIC_MODULES = ("ebmppl.numpyro", "ebmppl.pyro", "ebmppl.diagnostics", "ebmppl.datasets")
TUTORIALS_PAGE = "tutorials"
NO_TUTORIALS = "No tutorial has been written yet: notebooks put in `tutorials/` appear here.\n"


def copy_tutorials(source: Path, target: Path) -> list[str]:
    """Mirror the notebooks and images of ``source`` into ``target``; return the notebooks' names.

    Files of an earlier build that ``source`` no longer has are removed, so a
    deleted tutorial does not linger on the site; unchanged files are not
    rewritten, so Sphinx does not reread them.
    """
    wanted = []
    if source.is_dir():
        wanted = [p for p in sorted(source.rglob("*"))
                  if p.is_file() and ".ipynb_checkpoints" not in p.parts
                  and (p.suffix == ".ipynb" or p.suffix.lower() in IMAGE_SUFFIXES)]
    relative = {p.relative_to(source) for p in wanted}
    if target.is_dir():
        for old in sorted(target.rglob("*"), reverse=True):
            if old.is_file() and old.relative_to(target) not in relative:
                old.unlink()
            elif old.is_dir() and not any(old.iterdir()):
                old.rmdir()
    for path in wanted:
        copy = target / path.relative_to(source)
        copy.parent.mkdir(parents=True, exist_ok=True)
        if not copy.exists() or copy.read_bytes() != path.read_bytes():
            shutil.copyfile(path, copy)
    return [p.name for p in wanted if p.suffix == ".ipynb"]


def _public_objects() -> set[int]:
    """``id`` of every object the public modules export (documented on the public pages)."""
    ids = set()
    for name in PUBLIC_MODULES:
        module = importlib.import_module(name)
        ids.update(id(getattr(module, member)) for member in module.__all__)
    return ids


def _own_members(module, public: set[int]) -> tuple[list[str], list[str]]:
    """The names of ``module.__all__`` defined in ``module`` itself and not public: (code, data).

    Code (classes, functions) and data with a ``#:`` comment are documented
    from their docstring or comment; other data (a constant) is listed with
    its value.
    """
    commented = {name for (namespace, name) in ModuleAnalyzer.for_module(module.__name__).find_attr_docs() if not namespace}
    code, data = [], []
    for name in getattr(module, "__all__", []):
        obj = getattr(module, name)
        if id(obj) in public:
            continue
        if inspect.isclass(obj) or inspect.isroutine(obj):
            if obj.__module__ == module.__name__:
                code.append(name)
        elif not inspect.ismodule(obj):
            (code if name in commented else data).append(name)
    return code, data


def write_module_pages(package: str, target: Path) -> list[str]:
    """Write one page per sub-package of ``package`` (and an index) into ``target``; return their names.

    A page holds the sub-package's own docstring and each of its modules, with
    the members each defines (its ``__all__``, less what is public). Pages
    whose text has not changed are not rewritten.
    """
    root = importlib.import_module(package)
    public = _public_objects()
    modules = [root.__name__] + sorted(m.name for m in pkgutil.walk_packages(root.__path__, f"{package}.")
                                       if not any(part.startswith("_") for part in m.name.split(".")))
    packages = [m for m in modules if hasattr(importlib.import_module(m), "__path__")]
    pages = {}
    for name in packages:
        children = [m for m in modules if m.rsplit(".", 1)[0] == name and m not in packages]
        blocks = []
        for module_name in [name] + children:
            if module_name in PUBLIC_MODULES:
                blocks.append(f"``{module_name}`` is documented in :doc:`/api/{module_name.split('.')[-1]}`.\n")
                continue
            code, data = _own_members(importlib.import_module(module_name), public)
            heading = module_name if module_name == name else f"``{module_name.rsplit('.', 1)[1]}``"
            underline = "=" if module_name == name else "-"
            option = f"   :members: {', '.join(code)}\n" if code else "   :no-members:\n"
            constants = "".join(f"\n.. autodata:: {module_name}.{member}\n" for member in data)
            blocks.append(f"{heading}\n{underline * len(heading)}\n\n.. automodule:: {module_name}\n{option}{constants}")
        if not blocks[0].startswith(name):  # a public package: the page still needs a title
            blocks.insert(0, f"{name}\n{'=' * len(name)}\n")
        pages[name] = "\n".join(blocks)
    entries = "\n".join(f"   {name}" for name in pages)
    index = ("All modules\n===========\n\n"
             "Every module of the package, one page per sub-package, generated from the import tree\n"
             "when the site is built. The public names are on the pages of the API reference; the\n"
             "rest is for readers of the code (see :doc:`/architecture`).\n\n"
             f".. toctree::\n   :maxdepth: 1\n\n{entries}\n")
    target.mkdir(parents=True, exist_ok=True)
    written = {f"{name}.rst": text for name, text in pages.items()} | {"index.rst": index}
    for old in target.glob("*.rst"):
        if old.name not in written:
            old.unlink()
    for filename, text in written.items():
        path = target / filename
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    return list(pages)


# -- resolving references to ebmppl objects by identity ----------------------------------------------

_MISSING = object()


def _import_object(dotted: str):
    """The object a dotted name denotes, or ``_MISSING``."""
    parts = dotted.split(".")
    if not all(parts):
        return _MISSING
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr, _MISSING)
            if obj is _MISSING:
                return _MISSING
        return obj
    return _MISSING


def _identity(obj) -> int:
    """``id`` of an object, the same for every access to a method (``cls.method`` is a new bound method)."""
    return id(getattr(obj, "__func__", obj))


def _documented_names(env) -> dict[int, str]:
    """``id(object) -> the name it is documented under`` for the ebmppl objects of the Python domain."""
    cache = getattr(env, "_ebmppl_documented", None)
    if cache is None:
        cache = {}
        for name, entry in env.domains["py"].objects.items():
            if name.startswith("ebmppl") and not entry.aliased:
                obj = _import_object(name)
                if obj is not _MISSING:
                    cache.setdefault(_identity(obj), name)
        env._ebmppl_documented = cache
    return cache


def _source_module(node) -> str | None:
    """The module that defines the documented object a reference sits in (``None`` outside one)."""
    parent = node.parent
    while parent is not None:
        if isinstance(parent, addnodes.desc):
            for signature in parent.children:
                fullname = signature.get("module", "") + "." + signature.get("fullname", "")
                obj = _import_object(fullname.strip("."))
                module = getattr(obj, "__module__", None)
                if isinstance(module, str):
                    return module
        parent = parent.parent
    return None


def resolve_by_identity(app: Sphinx, env, node, contnode):
    """Resolve a Python reference to an ebmppl object documented under another name."""
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip("~.")
    candidates = [target]
    for context in (node.get("py:module"), _source_module(node)):
        if context and node.get("py:class"):
            candidates.append(f"{context}.{node['py:class']}.{target}")
        while context:  # the module, then the packages above it
            candidates.append(f"{context}.{target}")
            context = context.rpartition(".")[0]
    documented = _documented_names(env)
    for candidate in candidates:
        if not candidate.startswith("ebmppl"):
            continue
        obj = _import_object(candidate)
        if obj is not _MISSING and _identity(obj) in documented:
            return env.domains["py"].resolve_xref(env, node.get("refdoc", ""), app.builder, "obj",
                                                  documented[_identity(obj)], node, contnode)
    return None


# -- members ---------------------------------------------------------------------------------------------

def _skip_tuple_fields(app: Sphinx, what: str, name: str, obj, skip: bool, options) -> bool | None:
    """NamedTuple fields are documented by the class's ``Attributes:`` section, not as "Alias for field"."""
    if (getattr(obj, "__doc__", None) or "").startswith("Alias for field number"):
        return True
    return None


_DOTTED = re.compile(r"(?<![\w.~])((?:[A-Za-z_]\w*\.)+[A-Za-z_]\w*)")


def _short_attribute_types(app: Sphinx, what: str, name: str, obj, options, lines: list[str]) -> None:
    """Show an attribute's type by its last name, as signatures do (``Array``, not ``jax.jaxlib._jax.Array``).

    Napoleon writes the annotations of ``Attributes:`` fully qualified; the
    link (where there is one) keeps the full name.
    """
    for i, line in enumerate(lines):
        head, sep, annotation = line.partition(":type: ")
        if sep and not head.strip():
            lines[i] = head + sep + _DOTTED.sub(r"~\1", annotation)


# -- wiring ----------------------------------------------------------------------------------------------

def _on_builder_inited(app: Sphinx) -> None:
    docs = Path(app.srcdir)
    source = Path(app.config.ebmppl_tutorials_dir or docs.parent / "tutorials")
    app.env.ebmppl_tutorials = copy_tutorials(source, docs / "tutorials")
    app.env._ebmppl_documented = None  # rebuilt from this build's objects when first needed
    write_module_pages("ebmppl", docs / "api" / "modules")


def _on_source_read(app: Sphinx, docname: str, source: list[str]) -> None:
    """With no notebooks, the tutorials page's glob toctree would match nothing (an error under -W)."""
    if docname == TUTORIALS_PAGE and not getattr(app.env, "ebmppl_tutorials", []):
        source[0] = re.sub(r"```\{toctree\}.*?```\n", NO_TUTORIALS, source[0], flags=re.S)


def _tutorials_page_outdated(app: Sphinx, env, added, changed, removed) -> list[str]:
    """The tutorials page is read again at every build: its toctree depends on the notebooks there are."""
    return [TUTORIALS_PAGE]


def setup(app: Sphinx) -> dict:
    # where the notebooks come from: the repository's tutorials/ unless set (``-D ebmppl_tutorials_dir=...``)
    app.add_config_value("ebmppl_tutorials_dir", "", "env", str)
    app.connect("builder-inited", _on_builder_inited)
    app.connect("source-read", _on_source_read)
    app.connect("env-get-outdated", _tutorials_page_outdated)
    app.connect("missing-reference", resolve_by_identity)
    app.connect("autodoc-skip-member", _skip_tuple_fields)
    app.connect("autodoc-process-docstring", _short_attribute_types, priority=600)  # after napoleon
    return {"parallel_read_safe": True, "parallel_write_safe": True}
