# ruff: noqa: E501  (tables of long fake credentials read best one per line)
"""Secret detection: provider formats, PEM, JWT, passwords in URLs and connection strings,
high-entropy assignments; and values that look similar but are not secrets."""

from __future__ import annotations

import pytest

from bastion.governance.guards import SecretGuard

# Fake credentials with the real shapes (none of them is live).
POSITIVES = [
    ("AWS_ACCESS_KEY", "aws_access_key_id = AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
    (
        "AWS_SECRET_KEY",
        "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    ),
    ("GCP_API_KEY", "key=AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW", "AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW"),
    (
        "AZURE_STORAGE_KEY",
        "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey="
        "Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cQ==;",
        "Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cQ==",
    ),
    ("OPENAI_API_KEY", "OPENAI_API_KEY=sk-proj-abcdEFGH1234ijklMNOP5678qrst", "sk-proj-abcdEFGH1234ijklMNOP5678qrst"),
    (
        "ANTHROPIC_API_KEY",
        "x-api-key: sk-ant-api03-" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5bC7dE9fG1hJ3kL5mN7pQ9rS1tU3vW5xY7zA9bC1dE3f-gHAA",
        "sk-ant-api03-" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5bC7dE9fG1hJ3kL5mN7pQ9rS1tU3vW5xY7zA9bC1dE3f-gHAA",
    ),
    ("GITHUB_TOKEN", "token ghp_0123456789abcdefghijABCDEFGHIJ012345", "ghp_0123456789abcdefghijABCDEFGHIJ012345"),
    ("SLACK_TOKEN", "SLACK=xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"),
    ("STRIPE_KEY", "stripe.api_key = 'sk_live_4eC39HqLyjWDarjtT1zdp7dc'", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    ("URL_PASSWORD", "DATABASE_URL=postgresql://admin:s3cr3tP4ss@db.internal:5432/app", "s3cr3tP4ss"),
    ("CONNECTION_STRING_PASSWORD", "Server=tcp:x.db;User Id=u;Password=Pa55w0rd!x;", "Pa55w0rd!x"),
    (
        "JWT",
        "Authorization: Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
        "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
        "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    ),
    ("SECRET_ASSIGNMENT", 'api_key = "9f8e7d6c5b4a39281706f5e4d3c2b1a0"', "9f8e7d6c5b4a39281706f5e4d3c2b1a0"),
    ("SECRET_ASSIGNMENT", "client_secret: Xq7!vR2#pL9$wK4m", "Xq7!vR2#pL9$wK4m"),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "text", "value"), POSITIVES)
def test_secret_found(secrets_guard: SecretGuard, kind: str, text: str, value: str) -> None:
    found = [(f.type, text[f.start : f.end]) for f in secrets_guard.scan(text)]
    assert (kind, value) in found, found


def test_pem_private_key_block_is_one_finding(secrets_guard: SecretGuard) -> None:
    text = (
        "config:\n-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo\n"
        "4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u\n"
        "-----END RSA PRIVATE KEY-----\nrest"
    )
    found = secrets_guard.scan(text)
    assert [f.type for f in found] == ["PRIVATE_KEY"]
    f = found[0]
    assert text[f.start : f.end].startswith("-----BEGIN RSA PRIVATE KEY-----")
    assert text[f.start : f.end].endswith("-----END RSA PRIVATE KEY-----")


NOT_SECRETS = [
    "password = changeme",
    "password: ${DB_PASSWORD}",
    "api_key = os.environ['API_KEY']",
    "token = None",
    "secret = 'aaaaaaaaaaaaaaaa'",  # no entropy
    "the access token expires in 3600 seconds",
    "sk-learn is a typo for scikit-learn",
    "commit 9f8e7d6c5b4a39281706f5e4d3c2b1a0 fixed it",  # a hash, not assigned to a secret name
    "eyJ is how base64 JSON starts",
    "https://example.com/path?user=bob",
]


@pytest.mark.parametrize("text", NOT_SECRETS)
def test_not_a_secret(secrets_guard: SecretGuard, text: str) -> None:
    assert secrets_guard.scan(text) == []


def test_evidence_never_contains_the_secret(secrets_guard: SecretGuard) -> None:
    for _, text, value in POSITIVES:
        for f in secrets_guard.scan(text):
            assert value not in f.evidence
