"""server.json, the entry for the MCP server registry."""

import json
from pathlib import Path

import jsonschema
import pytest

import mmsearch
from mmsearch.config import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]
SCHEMA = REPO_ROOT.parent / "shared" / "schemas" / "mcp-server.schema.json"


@pytest.fixture
def server_json() -> dict:
    return json.loads((REPO_ROOT / "server.json").read_text())


def test_server_json_is_valid_against_the_registry_schema(server_json) -> None:
    assert SCHEMA.is_file(), (
        f"the registry schema belongs at {SCHEMA} (../shared beside the checkout)"
    )
    schema = json.loads(SCHEMA.read_text())
    jsonschema.validate(server_json, schema, format_checker=jsonschema.FormatChecker())


def test_server_json_version_is_the_package_version(server_json) -> None:
    assert server_json["version"] == mmsearch.__version__
    assert [p["version"] for p in server_json["packages"]] == [mmsearch.__version__]


def test_documented_environment_variables_are_real_settings(server_json) -> None:
    fields = {f"MMSEARCH_{name.upper()}" for name in Settings.model_fields}
    for package in server_json["packages"]:
        for variable in package["environmentVariables"]:
            assert variable["name"] in fields
