"""The `herald` CLI: every command documents itself and speaks JSON; campaigns and reports read well."""

import json

import click
from click.testing import CliRunner

from worker.cli import main as cli


def leaf_commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from leaf_commands(command, (*prefix, name))
        else:
            yield (*prefix, name)


def test_every_command_has_help_and_json():
    runner = CliRunner()
    commands = list(leaf_commands(cli))
    assert {("campaigns",), ("report",), ("keys", "create"), ("db", "upgrade")} <= set(commands)
    for path in commands:
        result = runner.invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "--json" in result.output, f"herald {' '.join(path)} has no --json"


def test_submit_campaigns_and_report(services, tmp_path):
    runner = CliRunner(env={"COLUMNS": "160"})
    assert json.loads(runner.invoke(cli, ["db", "upgrade", "--json"]).stdout)["revision"]
    recipients = tmp_path / "list.csv"
    recipients.write_text("to,name\n+447400123456,Ann\n07400 123457,Bob\n07400123456,Ann again\nnope,X\n")

    submitted = runner.invoke(cli, ["submit", str(recipients), "--from", "Herald", "--message", "Hi {name}",
                                    "--region", "GB", "--json"])
    assert submitted.exit_code == 0, submitted.output
    receipt = json.loads(submitted.stdout)
    assert (receipt["accepted"], receipt["duplicates"], receipt["invalid"]) == (2, 1, 1), receipt
    campaign_id = receipt["campaign_id"]

    listed = json.loads(runner.invoke(cli, ["campaigns", "--json"]).stdout)
    assert [(c["campaign_id"], c["accepted"], c["status"]) for c in listed] == [(campaign_id, 2, "running")]
    assert runner.invoke(cli, ["campaigns", "--status", "completed", "--json"]).stdout.strip() == "[]"
    table = runner.invoke(cli, ["campaigns"]).stdout
    assert campaign_id[:8] in table and "running" in table

    report = json.loads(runner.invoke(cli, ["report", campaign_id, "--json"]).stdout)
    assert (report["accepted"], report["duplicates"], report["invalid"]) == (2, 1, 1)
    table = runner.invoke(cli, ["report", campaign_id]).stdout
    assert "duplicates / invalid / suppressed" in table and "│" in table
    missing = runner.invoke(cli, ["report", "00000000-0000-0000-0000-000000000000"])
    assert missing.exit_code == 1 and "no campaign" in missing.output


def test_a_nul_byte_in_a_csv_field_loses_that_recipient_only(services, tmp_path):
    runner = CliRunner()
    recipients = tmp_path / "list.csv"
    recipients.write_bytes(b"to,name,client_ref\n+447400123456,Ann,a\n+447400123457,B\x00ob,b\n"
                           b"+447400123458,Cy,c\x00\n+447400123459,Di,d\n")
    submitted = runner.invoke(cli, ["submit", str(recipients), "--from", "Herald", "--message", "Hi {name}",
                                    "--json"])
    assert submitted.exit_code == 0, submitted.output
    receipt = json.loads(submitted.stdout)
    assert (receipt["accepted"], receipt["invalid"]) == (2, 2), receipt
    assert {r["reason"] for r in receipt["invalid_reasons"]} == {
        "a field holds a NUL (\\u0000) or lone surrogate character, which text cannot hold"}
