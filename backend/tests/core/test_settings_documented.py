"""Every setting a deployment can set is documented where operators look: .env.example and README's table."""

from __future__ import annotations

import pytest

from app.core.config import REPO_ROOT, Settings


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_is_in_env_example_and_the_readme(name: str) -> None:
    variable = name.upper()
    assert f"# {variable}=" in (REPO_ROOT / ".env.example").read_text(encoding="utf-8")
    assert f"`{variable}`" in (REPO_ROOT / "README.md").read_text(encoding="utf-8")
