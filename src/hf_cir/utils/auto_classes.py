"""`import hf_cir` registers the model families' classes with transformers' Auto classes, without importing
transformers itself.

transformers' Auto classes live in `transformers.models.auto.{configuration,modeling,processing}_auto`. When one of
those modules is already imported, the families' classes are registered at once; otherwise a finder on `sys.meta_path`
(the import system's documented hook, PEP 451) registers them right after the module has loaded. So
`import hf_cir; AutoModel.from_pretrained(folder)` returns hf-cir's own class (no `trust_remote_code`, no prompt),
while `import hf_cir` and `hf-cir --help` import neither transformers nor torch.

Each registration imports the family's package (e.g. `hf_cir.models.lincir`), whose import registers its classes
with `AutoConfig.register` / `AutoModel.register` / `AutoProcessor.register`, as transformers documents for custom
models.
"""

from __future__ import annotations

import importlib
import sys

__all__ = ["AUTO_MODULES", "install_auto_class_registration"]

# The transformers module that defines each Auto class a family may register with.
AUTO_MODULES = {
    "AutoConfig": "transformers.models.auto.configuration_auto",
    "AutoModel": "transformers.models.auto.modeling_auto",
    "AutoProcessor": "transformers.models.auto.processing_auto",
    "AutoTokenizer": "transformers.models.auto.tokenization_auto",
    "AutoImageProcessor": "transformers.models.auto.image_processing_auto",
}


def _family_packages() -> dict[str, list[str]]:
    """transformers Auto module -> the hf-cir packages whose import registers a family's class with it."""
    from ..families import model_families

    packages: dict[str, list[str]] = {}
    for family in model_families().values():
        for auto_class, path in family.auto_classes.items():
            package = path.partition(":")[0].rpartition(".")[0]  # the package of the family's module
            packages.setdefault(AUTO_MODULES[auto_class], [])
            if package not in packages[AUTO_MODULES[auto_class]]:
                packages[AUTO_MODULES[auto_class]].append(package)
    return packages


def _register(module_name: str) -> None:
    for package in _family_packages().get(module_name, []):
        try:
            importlib.import_module(package)  # registers its classes (returns at once if under way or done)
        except Exception as error:  # never break the user's `import transformers`
            import logging

            logging.getLogger(__name__).warning(
                "hf-cir could not register %s with transformers' Auto classes: %s", package, error
            )


class _RegisterAfterImport:  # a `importlib.abc.MetaPathFinder` (not subclassed: importing the ABCs costs start-up time)
    """Finds nothing itself: for an Auto module, it wraps the spec the other finders return so that the families'
    classes are registered once the module has executed."""

    def __init__(self, module_names: set[str]):
        self.module_names = set(module_names)

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in self.module_names:
            return None
        self.module_names.discard(fullname)  # once per module
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _RegisteringLoader(spec.loader, fullname)
        return spec


class _RegisteringLoader:  # a `importlib.abc.Loader` wrapping the real one
    def __init__(self, loader, module_name: str):
        self._loader = loader
        self._module_name = module_name

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _register(self._module_name)

    def __getattr__(self, name):  # get_source, get_filename, is_package, resource readers, ...
        return getattr(self._loader, name)


_installed: _RegisterAfterImport | None = None


def install_auto_class_registration() -> None:
    """Register the families' Auto classes now for the transformers Auto modules already imported, and right after
    import for the others (idempotent; called by `import hf_cir`)."""
    global _installed
    if _installed is not None:
        return
    pending = set()
    for module_name in AUTO_MODULES.values():  # the families' Auto classes are read only when one of these loads
        if module_name in sys.modules:
            _register(module_name)
        else:
            pending.add(module_name)
    _installed = _RegisterAfterImport(pending)
    sys.meta_path.insert(0, _installed)
