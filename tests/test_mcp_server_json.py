"""server.json, the entry for the MCP server registry."""

import json
from pathlib import Path

import jsonschema
import pytest

import mmsearch
from mmsearch.config import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]
# The registry's schema, carried in the repository so the tests need nothing beside a clone.
SCHEMA = REPO_ROOT / "schemas" / "server.schema.json"


@pytest.fixture
def server_json() -> dict:
    return json.loads((REPO_ROOT / "server.json").read_text())


@pytest.fixture
def schema() -> dict:
    return json.loads(SCHEMA.read_text())


def test_server_json_is_valid_against_the_registry_schema(server_json, schema) -> None:
    jsonschema.validate(server_json, schema, format_checker=jsonschema.FormatChecker())


def test_server_json_names_the_schema_the_repository_carries(server_json, schema) -> None:
    assert server_json["$schema"] == schema["$id"]


def test_server_json_names_the_current_registry_schema(server_json) -> None:
    assert server_json["$schema"].endswith("/schemas/2025-12-11/server.schema.json")


def test_the_carried_schema_rejects_what_the_registry_rejects(server_json, schema) -> None:
    """A copy that accepted anything would make the validity test above worthless."""
    broken = {**server_json, "name": "no-slash"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)
    latest = json.loads(json.dumps(server_json))
    latest["packages"][0]["version"] = "latest"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(latest, schema)


def test_nothing_in_the_project_reads_files_beside_the_checkout() -> None:
    folder_name = "sha" + "red"  # spelled apart so this test does not find itself
    needles = ("../" + folder_name, f'parent / "{folder_name}"')
    for folder in ("tests", "mmsearch", "mcp_server", ".ci"):
        for path in (REPO_ROOT / folder).rglob("*"):
            if path.is_file() and path.suffix in {"", ".py", ".sh", ".toml", ".json", ".md"}:
                text = path.read_text(errors="replace")
                assert not any(needle in text for needle in needles), path


def test_server_json_version_is_the_package_version(server_json) -> None:
    assert server_json["version"] == mmsearch.__version__
    assert [p["version"] for p in server_json["packages"]] == [mmsearch.__version__]


def test_documented_environment_variables_are_real_settings(server_json) -> None:
    fields = {f"MMSEARCH_{name.upper()}" for name in Settings.model_fields}
    for package in server_json["packages"]:
        for variable in package["environmentVariables"]:
            assert variable["name"] in fields
