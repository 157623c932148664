"""Register nlpipe's models and pipelines with transformers as soon as transformers is imported.

``import nlpipe`` promises that ``AutoModel*.from_pretrained(run_dir)`` and ``pipeline(...)`` work on
run folders. Registering needs transformers and torch (≈5 s of CPU), which the light CLI commands
(``--help``, ``recipes list``, ``cache-dir``) never use. So ``import nlpipe`` registers at once only
when transformers is already imported; otherwise it leaves a finder on ``sys.meta_path`` that
registers right after transformers' own import finishes — before any user code can reach an Auto
class, and without nlpipe importing transformers itself.

The registration imports only ``nlpipe.models`` and ``nlpipe.pipelines``; both packages import
transformers first thing, so the hook never meets one of their modules half-initialized.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from types import ModuleType

_done = False


def register_with_transformers() -> None:
    """Register every nlpipe config, model and pipeline with transformers (idempotent)."""
    global _done
    if _done:
        return
    from .models.auto_registration import register_all
    from .pipelines.text2text import register_pipelines  # the module: its package may be mid-import

    register_all()
    register_pipelines()  # translation / summarization / text2text-generation (removed in transformers 5)
    _done = True


class _RegisterAfterTransformersImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the real loader of ``transformers`` so registration runs after it."""

    def find_spec(self, fullname: str, path, target=None):  # noqa: ANN001 - importlib's signature
        if fullname != "transformers":
            return None
        sys.meta_path.remove(self)  # one shot; also keeps find_spec below from finding us again
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module: ModuleType) -> None:
            exec_module(module)
            register_with_transformers()

        spec.loader.exec_module = exec_then_register  # this spec's own loader instance
        return spec


def register_when_transformers_is_imported() -> None:
    """Register now if transformers is loaded, else right after it is (see the module docstring)."""
    if "transformers" in sys.modules:
        register_with_transformers()
    elif not any(isinstance(f, _RegisterAfterTransformersImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterTransformersImport())
