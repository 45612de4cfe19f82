"""Config files -> frozen dataclasses: bridge.yaml (`load_config`), hub.yaml (`bridge.config.hub`) and
camera.yaml (`bridge.config.camera`), all read by one machinery and one declarative schema
(`bridge.config.schema`, the keys in `bridge.config.keys`) that also generates the reference tables of
docs/config.md and the JSON Schemas of docs/schema/ (`python -m bridge.config.docs --write`)."""

from bridge.config.loader import check_main, load_config, load_or_report, read_document, summary
from bridge.config.tree import ConfigError, ConfigIssue

__all__ = ["ConfigError", "ConfigIssue", "check_main", "load_config", "load_or_report", "read_document",
           "summary"]
