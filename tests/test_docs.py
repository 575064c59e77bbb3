"""The documentation stays true: every setting and every error code is documented."""

from pathlib import Path

import pytest

from model_server.errors import ERROR_CODES
from model_server.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DOCS = "\n".join(path.read_text(encoding="utf-8")
                 for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))] if path.exists())


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_is_documented(name):
    assert f"MODEL_SERVER_{name.upper()}" in DOCS


@pytest.mark.parametrize("code", sorted(ERROR_CODES))
def test_every_error_code_is_documented(code):
    assert f"`{code}`" in DOCS
