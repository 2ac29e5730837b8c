"""`trafficreport <command> --help` explains itself: a description, help on every option, and only
the options the command uses (a read-only command offers no Dask scheduler or staging area)."""

from __future__ import annotations

import argparse

import pytest

from flows.cli import build_parser

READ_ONLY = ("query", "shell", "report", "check-calibration", "rebuild-catalog")
RUNS_THE_WEEKLY_FLOW = ("weekly", "backfill", "demo", "lookback-demo", "serve")


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    [choices] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(choices.choices)


def test_every_command_has_a_description_and_every_option_a_help() -> None:
    missing = []
    for name, command in _commands().items():
        if not command.description:
            missing.append(f"{name}: no description")
        for action in command._actions:
            if action.option_strings and action.help in (None, "") and "-h" not in action.option_strings:
                missing.append(f"{name} {'/'.join(action.option_strings)}: no help")
            if not action.option_strings and action.dest != "help" and not action.help:
                missing.append(f"{name} {action.dest}: no help")
    assert missing == []


def _options(command: argparse.ArgumentParser) -> set[str]:
    return {option for action in command._actions for option in action.option_strings}


@pytest.mark.parametrize("name", READ_ONLY)
def test_read_only_commands_offer_no_dask_and_no_staging(name: str) -> None:
    options = _options(_commands()[name])
    assert "--dask" not in options and "--staging" not in options
    assert {"--config", "--landing", "--warehouse"} <= options


@pytest.mark.parametrize("name", RUNS_THE_WEEKLY_FLOW)
def test_commands_that_run_weeks_offer_dask_and_staging(name: str) -> None:
    assert {"--dask", "--staging", "--config", "--landing", "--warehouse"} <= _options(_commands()[name])


def test_weekly_help_says_what_week_takes() -> None:
    text = _commands()["weekly"].format_help()
    assert "Run the weekly report flow for one week." in text
    assert "Monday of the week, e.g. 2024-06-03" in text
