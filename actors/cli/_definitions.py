"""``definitions register|list|show``: workflow definitions in the engine's registry."""

from __future__ import annotations

from typing import Any

import click
import yaml

from ..core import Definition, DefinitionError, load_definition
from ..runtime import Client, UnknownWorkflowTypeError, VersionConflictError
from ._app import App, cli, pass_app
from ._errors import CliError, ExitCode
from ._inputs import VERSION, format_of, name_argument, read_text
from ._output import new_table

__all__ = ["definitions"]


@cli.group()
def definitions() -> None:
    """Register, list and show workflow definitions."""


@definitions.command("register")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, allow_dash=True))
@pass_app
def definitions_register(app: App, files: tuple[str, ...]) -> ExitCode:
    """Register the definitions in FILE... (YAML, or JSON if named .json; - is stdin).

    Every file is checked before anything is registered: if one is invalid,
    each problem is printed with its field path and nothing is registered.
    Registering the same content again is a no-op ("unchanged").
    """
    parsed: list[tuple[str, Definition]] = []
    problems: list[str] = []
    for path in files:
        text = read_text(path)
        try:
            parsed.append((path, load_definition(text, format=format_of(path))))
        except DefinitionError as exc:
            name = "stdin" if path == "-" else path
            problems.extend(f"{name}: {error}" for error in exc.errors)
    if problems:
        raise CliError(
            "invalid definition: nothing was registered", ExitCode.INVALID, details=problems
        )

    async def register(client: Client) -> ExitCode:
        known = await client.definitions()
        rows: list[dict[str, Any]] = []
        for path, definition in parsed:
            before = definition.version in known.get(definition.type, [])
            try:
                await client.register(definition)
            except VersionConflictError as exc:
                done = ", ".join(f"{r['type']} v{r['version']}" for r in rows) or "nothing"
                raise CliError(
                    f"{path}: {exc}", ExitCode.INVALID, details=[f"registered before it: {done}"]
                ) from None
            known.setdefault(definition.type, []).append(definition.version)
            rows.append(
                {
                    "file": path,
                    "type": definition.type,
                    "version": definition.version,
                    "status": "unchanged" if before else "registered",
                }
            )
        if app.json:
            app.document(rows)
        else:
            table = new_table("file", "type", "version", "status")
            for row in rows:
                table.add_row(row["file"], row["type"], str(row["version"]), row["status"])
            app.show(table)
        return ExitCode.OK

    return app.run(register)


@definitions.command("list")
@pass_app
def definitions_list(app: App) -> ExitCode:
    """List every registered workflow type with its versions."""

    async def listing(client: Client) -> ExitCode:
        rows: list[dict[str, Any]] = []
        for workflow_type, versions in (await client.definitions()).items():
            try:
                latest: Definition | None = await client.definition(workflow_type, versions[-1])
            except UnknownWorkflowTypeError:
                # Stored, but this engine cannot read it (written by a newer one?).
                latest = None
            rows.append(
                {
                    "type": workflow_type,
                    "versions": versions,
                    "latest": versions[-1],
                    "steps": None if latest is None else len(latest.steps),
                    "description": "(unreadable)" if latest is None else latest.description,
                }
            )
        if app.json:
            app.document(rows)
        elif not rows:
            app.show("no definitions registered")
        else:
            table = new_table("type", "versions", "latest", "steps", "description")
            for row in rows:
                table.add_row(
                    row["type"],
                    ", ".join(map(str, row["versions"])),
                    str(row["latest"]),
                    "" if row["steps"] is None else str(row["steps"]),
                    row["description"],
                )
            app.show(table)
        return ExitCode.OK

    return app.run(listing)


@definitions.command("show")
@click.argument("workflow_type", metavar="TYPE", callback=name_argument("workflow type"))
@click.option("--version", type=VERSION, help="A version (default: the newest).")
@pass_app
def definitions_show(app: App, workflow_type: str, version: int | None) -> ExitCode:
    """Show a registered definition in its canonical form, every default spelled out."""

    async def show(client: Client) -> ExitCode:
        definition = await client.definition(workflow_type, version or 0)
        data = definition.to_data()
        if app.json:
            app.document(data)
            return ExitCode.OK
        versions = (await client.definitions()).get(workflow_type, [])
        app.show(
            f"{workflow_type} v{definition.version}"
            f"  (versions registered: {', '.join(map(str, versions))})"
        )
        # A stable, readable form: the keys in the canonical order, not sorted.
        app.line(yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip())
        return ExitCode.OK

    return app.run(show)
