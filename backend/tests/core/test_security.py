"""The JWT secret check: every key made the way README says is accepted, and template values are refused
whole, in any case and repeated, without refusing random keys that happen to contain a word."""

from __future__ import annotations

import secrets

import pytest

from app.core.security import KNOWN_PLACEHOLDER_SECRETS, MIN_SECRET_LENGTH, is_placeholder_secret


def test_no_secret_made_with_the_readme_command_is_refused() -> None:
    generated = [secrets.token_urlsafe(32) for _ in range(100_000)]
    refused = [secret for secret in generated if is_placeholder_secret(secret)]
    assert refused == []


@pytest.mark.parametrize(
    "secret",
    [
        # Random keys that happen to contain what a substring check would have refused.
        "xxxK3v9QpLmZ2rTn8WbYc4HdJ6fGsA1eU0oI7",
        "yourN4kq8TzVb2LmXc9RwPd5HsJf3Gy6QeA1u",
        "Qm7secretZ2vK9pLx4TnW8bYc3HdJ6fGsA1eU0",
        "exampleK3v9QpLmZ2rTn8WbYc4HdJ6fGsA1eU",
    ],
)
def test_random_keys_containing_template_words_are_accepted(secret: str) -> None:
    assert not is_placeholder_secret(secret)


@pytest.mark.parametrize("template", sorted(KNOWN_PLACEHOLDER_SECRETS))
def test_known_templates_are_refused_whole_in_any_case_and_repeated(template: str) -> None:
    repeated = template * (MIN_SECRET_LENGTH // len(template) + 1)
    assert is_placeholder_secret(template)
    assert is_placeholder_secret(template.upper())
    assert is_placeholder_secret(repeated)
    assert is_placeholder_secret(repeated.title())


@pytest.mark.parametrize(
    "secret",
    [
        "x" * 64,  # one character
        "ab" * 32,  # a short run repeated
        "0123456789" * 4,  # a run of ten repeated, its last repetition cut short below
        ("0123456789" * 4)[:37],
        "aaaaaaaaaabbbbbbbbbbccccccccccdddddddddd",  # four distinct characters
        "short-but-random-3f9Kq",  # under 32 characters
    ],
)
def test_low_entropy_and_short_secrets_are_refused(secret: str) -> None:
    assert is_placeholder_secret(secret)
