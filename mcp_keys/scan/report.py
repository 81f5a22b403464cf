"""Findings as text, JSON lines or SARIF 2.1.0 (what GitHub code scanning accepts)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .. import __version__
from .scanner import NOTE, Finding

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: the scan path does not import typing
if TYPE_CHECKING:
    from typing import Any

KIND_TEXT = {
    "mcp-keys-key": "an mcp-keys API key",
    "stripe-secret-key": "a Stripe secret key",
    "stripe-webhook-secret": "a Stripe webhook signing secret",
    "github-token": "a GitHub token",
    "github-fine-grained-token": "a GitHub fine-grained token",
    "gitlab-token": "a GitLab token",
    "openai-api-key": "an OpenAI API key",
    "anthropic-api-key": "an Anthropic API key",
    "context7-api-key": "a Context7 API key",
    "openrouter-api-key": "an OpenRouter API key",
    "zapier-mcp-key": "a Zapier MCP key",
    "aws-access-key-id": "an AWS access key ID",
    "aws-secret-access-key": "an AWS secret access key",
    "google-api-key": "a Google API key",
    "google-oauth-client-secret": "a Google OAuth client secret",
    "slack-token": "a Slack token",
    "slack-webhook": "a Slack webhook URL",
    "huggingface-token": "a Hugging Face token",
    "groq-api-key": "a Groq API key",
    "perplexity-api-key": "a Perplexity API key",
    "xai-api-key": "an xAI API key",
    "tavily-api-key": "a Tavily API key",
    "firecrawl-api-key": "a Firecrawl API key",
    "notion-token": "a Notion token",
    "linear-api-key": "a Linear API key",
    "npm-token": "an npm token",
    "supabase-token": "a Supabase access token",
    "sendgrid-api-key": "a SendGrid API key",
    "digitalocean-token": "a DigitalOcean token",
    "shopify-token": "a Shopify token",
    "atlassian-api-token": "an Atlassian API token",
    "postman-api-key": "a Postman API key",
    "sentry-token": "a Sentry token",
    "figma-token": "a Figma token",
    "grafana-token": "a Grafana service account token",
    "telegram-bot-token": "a Telegram bot token",
    "jwt": "a JSON Web Token",
    "private-key": "a private key",
    "url-password": "a password in a URL",
    "url-secret": "a secret in a URL's query",
    "basic-auth": "a Basic auth password",
    "generic-secret": "a secret",
    "generic-bearer": "a bearer token",
}


def line(finding: Finding) -> str:
    """One finding as a line of text; a note says so first."""
    where = f"{finding.file}:{finding.line}"
    commit = f" (first in commit {finding.commit[:12]})" if finding.commit else ""
    level = "note: " if finding.level == NOTE else ""
    return (f"{level}{where}: {finding.path}: {KIND_TEXT.get(finding.kind, finding.kind)} "
            f"{finding.preview}{commit}; {finding.advice}")


def json_lines(findings: list[Finding]) -> str:
    return "".join(json.dumps(f.to_dict()) + "\n" for f in findings)


def sarif(findings: list[Finding], root: Path | None = None) -> dict[str, Any]:
    """A SARIF 2.1.0 log; artifact URIs are relative to ``root`` (the repository)."""
    root = (root or Path.cwd()).resolve()
    kinds = sorted({f.kind for f in findings})
    rules = [{"id": kind, "name": kind.replace("-", " "),
              "shortDescription": {"text": f"Hard-coded {KIND_TEXT.get(kind, kind)}"},
              "fullDescription": {"text": "A secret written into an MCP client config or .env "
                                  "file leaks with every copy of the file. Move it into a "
                                  "secret source and reference it (mcp-keys scan --fix)."},
              "defaultConfiguration": {"level": "error"},
              "properties": {"tags": ["security", "secret"]}} for kind in kinds]
    results = []
    for finding in findings:
        path = Path(os.path.abspath(finding.file))
        try:
            uri = path.resolve().relative_to(root).as_posix()
        except ValueError:
            uri = path.as_uri()
        results.append({
            "ruleId": finding.kind,
            "ruleIndex": kinds.index(finding.kind),
            "level": finding.level,
            "message": {"text": f"{KIND_TEXT.get(finding.kind, finding.kind)} at "
                                f"{finding.path} ({finding.preview}); {finding.advice}"},
            "locations": [{"physicalLocation": {
                "artifactLocation": {"uri": uri},
                "region": {"startLine": max(1, finding.line)}}}],
            "partialFingerprints": {"mcpKeysFinding/v1": f"{uri}:{finding.path}:{finding.kind}"},
        })
    return {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{"tool": {"driver": {"name": "mcp-keys", "version": __version__,
                                      "rules": rules}},
                  "results": results}],
    }
