"""MkDocs hooks: the settings reference generated from the settings model at build time (so it
cannot drift from the code), and the operations files the pages link to (runbook, deployment,
benchmark plots) taken into the site from where they live in the repository."""

from __future__ import annotations

import json
from pathlib import Path

from mkdocs.structure.files import File
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from settings import ENV_PREFIX, Settings

PLACEHOLDER = "<!-- settings reference -->"
REPOSITORY = Path(__file__).resolve().parents[2]
FROM_REPOSITORY = ["README.md", "ops/RUNBOOK.md", "ops/DEPLOYMENT.md", "ops/bench/results/*.png"]


def _default(field) -> str:
    value = field.get_default(call_default_factory=True)
    if value is PydanticUndefined or value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list | dict):
        return f"`{json.dumps(value)}`"
    return f"`{value}`"


def settings_rows(model: type[BaseModel] = Settings, prefix: str = ENV_PREFIX):
    """(variable, default, meaning) of every setting, sections expanded."""
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from settings_rows(annotation, f"{prefix}{name.upper()}__")
        else:
            yield f"{prefix}{name.upper()}", _default(field), field.description or ""


def settings_table() -> str:
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for variable, default, meaning in settings_rows():
        lines.append(f"| `{variable}` | {default} | {meaning.replace('|', '/')} |")
    return "\n".join(lines)


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Links are written for reading on the repository (README.md at the root, the pages in
    docs/); in the site every page and taken file sits under one root."""
    if page.file.src_uri == "README.md":
        markdown = markdown.replace("](docs/", "](")
    else:
        markdown = markdown.replace("](../ops/", "](ops/").replace("](../README.md", "](README.md")
    return markdown.replace(PLACEHOLDER, settings_table())


def on_files(files, config):
    for pattern in FROM_REPOSITORY:
        for path in sorted(REPOSITORY.glob(pattern)):
            files.append(
                File(
                    str(path.relative_to(REPOSITORY)),
                    src_dir=str(REPOSITORY),
                    dest_dir=config["site_dir"],
                    use_directory_urls=config["use_directory_urls"],
                )
            )
    return files
