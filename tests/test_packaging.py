"""The repository's promises about itself: compose file, console script."""

from __future__ import annotations

from pathlib import Path

import yaml

from backend.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def _subcommands(parser) -> dict:
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            return action.choices
    return {}


def test_every_compose_service_runs_a_real_fluxion_command():
    """Each product service in docker-compose.yml names a command that exists."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    commands = _subcommands(build_parser())
    checked = 0
    for name, service in compose["services"].items():
        argv = service.get("command", [])
        if not argv or argv[0] != "fluxion":
            continue
        assert argv[1] in commands, f"service {name}: no `fluxion {argv[1]}`"
        sub = commands[argv[1]]
        rest = argv[2:]
        if argv[1] == "etl":
            sub, rest = _subcommands(sub)[argv[2]], argv[3:]
        sub.parse_args(rest)  # exits (fails the test) on an unknown option
        checked += 1

    assert checked == 2


def test_public_surface_of_lockmanager_is_explicit():
    """`__all__` lists exactly the public names the package exports."""
    import lockmanager

    public = {n for n in dir(lockmanager) if not n.startswith("_")}
    modules = {"private_redis"}
    assert set(lockmanager.__all__) == public - modules


def test_lockmanager_imports_nothing_from_the_applications():
    """The library never reaches into backend or etl, nor reads the environment."""
    for path in (ROOT / "lockmanager").glob("*.py"):
        text = path.read_text()
        assert "import backend" not in text and "from backend" not in text, path
        assert "import etl" not in text and "from etl" not in text, path
        assert "os.environ" not in text and "getenv" not in text, path
