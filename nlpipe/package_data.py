"""Where the data folders shipped with nlpipe live: recipes/, tokenizers/ (specs)."""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def package_data_dir(installed_name: str, checkout_name: str) -> Path:
    """The folder inside an installed wheel (``nlpipe/<installed_name>``), else the checkout's root folder.

    An editable install or a plain checkout has the folders at the repository root; a wheel has
    them inside the package (pyproject.toml maps ``recipes`` → ``nlpipe/recipes`` and
    ``tokenizers`` → ``nlpipe/tokenizer_specs``).
    """
    installed = _HERE / installed_name
    if installed.is_dir():
        return installed
    return _HERE.parent / checkout_name
