"""Values handed to Ansible as data: every string is tagged `!unsafe`, so Ansible never templates it.

A `--set` value, a host address or a user name that contains `{{ lookup('pipe', ...) }}` would
otherwise run code on the controller when the play reads it. Only text we wrote ourselves and mean
as a Jinja expression is wrapped in `Template` and left for Ansible to render.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml


class Template(str):
    """A Jinja expression of alumet-setup's own (never user input): the one kind of text Ansible renders."""


class _Dumper(yaml.SafeDumper):
    pass


def _unsafe(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("!unsafe", str(text), style='"')


def _template(dumper: yaml.SafeDumper, text: Template) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", str(text), style='"')


_Dumper.add_representer(str, _unsafe)
_Dumper.add_representer(Template, _template)


def to_yaml(data: Mapping[str, Any]) -> str:
    """YAML for an extra-vars or inventory file: keys and string values `!unsafe`, Template strings not."""
    return yaml.dump(dict(data), Dumper=_Dumper, default_flow_style=False, allow_unicode=False, sort_keys=False)
