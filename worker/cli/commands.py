"""The `herald` command line."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from campaigns.errors import HeraldError, SubmissionError

json_option = click.option("--json", "as_json", is_flag=True, help="print machine-readable JSON on stdout")


def _err_console():
    from rich.console import Console

    return Console(stderr=True)


def _out_console():
    from rich.console import Console

    return Console()


class _Herald(click.Group):
    """An error Herald did not expect ends the command with its frames and exception types, never
    Python's whole traceback: a database error's message can quote the numbers and text it failed on."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            from worker.logs import exception_outline

            click.echo(f"herald {ctx.invoked_subcommand or ''} failed\n{exception_outline(exc)}", err=True)
            ctx.exit(1)


@click.group(cls=_Herald)
def main() -> None:
    """Herald: bulk SMS campaign dispatch on Celery, Redis and PostgreSQL."""
    from worker.logs import setup_logging

    setup_logging()


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@json_option
def db_upgrade(as_json: bool) -> None:
    """Apply every migration to the configured database."""
    from campaigns import migrate

    migrate.upgrade()
    revision = migrate.current()
    click.echo(json.dumps({"revision": revision}) if as_json else f"database at revision {revision}")


@main.command()
@click.option("--recipients", "-n", default=1000, show_default=True, help="recipients to generate")
@json_option
def demo(recipients: int, as_json: bool) -> None:
    """Run one generated campaign end to end against the built-in emulator."""
    import logging

    from worker.cli import demo as demo_module

    logging.getLogger().setLevel(logging.WARNING)

    sys.exit(demo_module.run(recipients, as_json=as_json))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=9000, show_default=True)
@click.option("--latency-ms", default=0.0, show_default=True)
@click.option("--report-delay-ms", default=50.0, show_default=True)
@click.option("--delivered-ratio", default=1.0, show_default=True)
@click.option("--fail-5xx", default=0.0, show_default=True, help="share of sends answered 500")
@click.option("--knobs", "knobs_json", default="{}", help="any other knobs as JSON (README: Emulators)")
@click.option("--json", "as_json", is_flag=True, help="log JSON lines")
def emulator(host: str, port: int, latency_ms: float, report_delay_ms: float,
             delivered_ratio: float, fail_5xx: float, knobs_json: str, as_json: bool) -> None:
    """Serve all five provider emulators under /aikdata/v1/sms, /laravel, /mobsms,
    /smsforai/api/v1 and /tikosms (token test-token; Laravel v1 user test-user/test-pass)."""
    import uvicorn

    from worker.emulator import Emulator, Knobs, create_app

    _json_logs(as_json)
    knobs = Knobs.model_validate({"latency_ms": latency_ms, "report_delay_ms": report_delay_ms,
                                  "delivered_ratio": delivered_ratio, "fail_5xx": fail_5xx,
                                  **json.loads(knobs_json)})
    uvicorn.run(create_app(Emulator(knobs)), host=host, port=port, log_level="warning",
                log_config=None)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True)
@click.option("--workers", default=1, show_default=True,
              help="processes sharing the port (a burst of delivery reports needs more than one core)")
@click.option("--json", "as_json", is_flag=True, help="log JSON lines")
def api(host: str, port: int, workers: int, as_json: bool) -> None:
    """Serve the HTTP API (intake, status, delivery-report webhooks, /metrics, health)."""
    import uvicorn

    from worker.startup import announce, refuse_misconfigured

    if as_json:
        os.environ["HERALD_LOG_JSON"] = "1"  # read again by each worker process
    _json_logs(as_json)
    refuse_misconfigured("herald api")  # before the port is bound and worker processes start
    announce("herald api")
    # log_config=None: uvicorn's records go through Herald's handler (plain or JSON, tokens redacted);
    # no access log: a line per delivery report costs throughput.
    uvicorn.run("worker.api.http:create_served_app", factory=True, workers=workers, host=host, port=port,
                log_level="info", log_config=None, access_log=False)


@main.command()
@click.option("--recipients", "-n", default=20_000, show_default=True, help="recipients in the campaign")
@click.option("--latency-ms", default=50.0, show_default=True, help="the emulated provider's latency")
@click.option("--workers", default=2, show_default=True, help="worker processes to start")
@click.option("--stages", default="intake,fanout,dispatch,reports", show_default=True,
              help="stages to time (each also runs those before it)")
@click.option("--pool", help="worker pool instead of the configured one (threads, prefork, ...)")
@click.option("--concurrency", type=int, help="worker concurrency instead of the configured one")
@click.option("--profile", "profile_dir", type=click.Path(file_okay=False, path_type=Path),
              help="write py-spy profiles of the workers and herald api here (needs py-spy)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@click.option("--markdown", is_flag=True, help="print the README's table")
def bench(recipients: int, latency_ms: float, workers: int, stages: str, pool: str | None,
          concurrency: int | None, profile_dir: Path | None, as_json: bool, markdown: bool) -> None:
    """Time intake, fan-out, dispatch and reports on the real PostgreSQL and Redis."""
    from rich.console import Console

    from worker.bench import Options, run
    from worker.bench.render import markdown as to_markdown
    from worker.bench.render import table

    console = Console(stderr=True)
    opts = Options(recipients=recipients, latency_ms=latency_ms, workers=workers, pool=pool,
                   concurrency=concurrency, profile_dir=profile_dir,
                   stages=tuple(s.strip() for s in stages.split(",") if s.strip()),
                   say=lambda msg: console.print(f"[dim]bench: {msg}"))
    try:
        results = run(opts)
    except HeraldError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(results))
    elif markdown:
        click.echo(to_markdown(results))
    else:
        Console().print(table(results))


def _json_logs(as_json: bool) -> None:
    if as_json:
        from campaigns.settings import configure, get_settings
        from worker.logs import setup_logging

        configure(get_settings().model_copy(update={"log_json": True}))
        setup_logging()


_service_option = click.option("--service", default="default", show_default=True, help="the service (tenant)")


@main.group()
def services() -> None:
    """Services (tenants): each owns its API keys, campaigns and suppression list."""


_high_priority_help = "may submit `\"priority\": \"high\"` campaigns (drained before every other)"


@services.command("create")
@click.argument("name")
@click.option("--high-priority", is_flag=True, help=_high_priority_help)
@json_option
def services_create(name: str, high_priority: bool, as_json: bool) -> None:
    """Create a service; then give it keys with `herald keys create NAME --service SERVICE`."""
    from campaigns import services as tenants

    try:
        info = tenants.create(name, high_priority=high_priority)
    except SubmissionError as exc:
        raise _refused(exc) from None
    click.echo(json.dumps(info.as_dict()) if as_json else f"service {info.id} ({info.name}) created")


@services.command("set")
@click.argument("name")
@click.option("--high-priority/--no-high-priority", required=True, help=_high_priority_help)
@json_option
def services_set(name: str, high_priority: bool, as_json: bool) -> None:
    """Change an existing service; its campaigns already submitted keep their priority."""
    from campaigns import services as tenants

    try:
        info = tenants.grant_high_priority(name, high_priority)
    except HeraldError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(info.as_dict()) if as_json else
               f"service {info.id} ({info.name}): high priority {'allowed' if info.high_priority else 'refused'}")


@services.command("list")
@json_option
def services_list(as_json: bool) -> None:
    from campaigns import services as tenants

    rows = [t.as_dict() for t in tenants.list_services()]
    if as_json:
        click.echo(json.dumps(rows))
        return
    for r in rows:
        grant = "\thigh priority" if r["high_priority"] else ""
        click.echo(f"{r['id']}\t{r['name']}\t{(r['created_at'] or '')[:19]}{grant}")


def _service_id(name: str) -> int:
    from campaigns import services as tenants

    try:
        return tenants.resolve(name)
    except HeraldError as exc:
        raise click.ClickException(str(exc)) from None


@main.group()
def keys() -> None:
    """API keys for callers of the HTTP API (shown once, stored only as SHA-256 hashes)."""


@keys.command("create")
@click.argument("name")
@click.option("--scope", "scopes", multiple=True, type=click.Choice(["campaigns:read", "campaigns:write", "admin"]),
              help="repeat for several; default: campaigns:read and campaigns:write; admin sees every service")
@_service_option
@json_option
def keys_create(name: str, scopes: tuple[str, ...], service: str, as_json: bool) -> None:
    """Create a key of a service and print it, once: only its hash is kept."""
    from campaigns import apikeys

    info, key = apikeys.create_key(name, scopes or apikeys.SCOPES, service=_service_id(service))
    if as_json:
        click.echo(json.dumps({**info.as_dict(), "key": key}))
        return
    click.echo(key)
    click.echo(f"key {info.id} ({info.name}, {' '.join(info.scopes)}): store it now, it cannot be shown again",
               err=True)


@keys.command("list")
@json_option
def keys_list(as_json: bool) -> None:
    """List keys (never the keys themselves)."""
    from campaigns import apikeys

    rows = [k.as_dict() for k in apikeys.list_keys()]
    if as_json:
        click.echo(json.dumps(rows))
        return
    from rich.table import Table

    table = Table(title="API keys")
    for column in ("id", "prefix", "name", "scopes", "created", "state"):
        table.add_column(column)
    for r in rows:
        state = f"revoked {r['revoked_at'][:19]}" if r["revoked_at"] else "active"
        table.add_row(str(r["id"]), r["prefix"] + "…", r["name"], " ".join(r["scopes"]),
                      (r["created_at"] or "")[:19], state)
    _out_console().print(table)


@keys.command("revoke")
@click.argument("key_id", type=int)
@json_option
def keys_revoke(key_id: int, as_json: bool) -> None:
    """Revoke a key by its id; requests with it are refused from now on."""
    from campaigns import apikeys

    try:
        info = apikeys.revoke_key(key_id)
    except HeraldError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(info.as_dict()) if as_json else f"key {info.id} ({info.name}) revoked")


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--from", "sender", required=True, help="sender id")
@click.option("--message", required=True, help="message template, {field} placeholders allowed")
@click.option("--region", "default_region", help="region for national numbers, e.g. GB")
@click.option("--provider", help="provider account name")
@click.option("--idempotency-key")
@click.option("--max-cost", help="refuse the campaign if its estimated cost is higher")
@click.option("--callback-url", help="URL told of the campaign's progress")
@click.option("--follow", is_flag=True, help="then show a progress bar until the campaign ends")
@_service_option
@json_option
def submit(file: Path, sender: str, message: str, default_region: str | None,
           provider: str | None, idempotency_key: str | None, max_cost: str | None,
           callback_url: str | None, follow: bool, service: str, as_json: bool) -> None:
    """Submit a campaign from a CSV or JSONL file of recipients, streamed, with a progress bar."""
    import campaigns
    from campaigns.sources import read_recipients
    from worker.cli.console import progress_bar
    from worker.cli.status_view import watch

    spec = {"from": sender, "message": message, "default_region": default_region, "provider": provider,
            "idempotency_key": idempotency_key, "max_cost": max_cost, "callback_url": callback_url}
    console = _err_console()
    with file.open("rb") as f:
        lines = sum(1 for _ in f)
    try:
        with progress_bar(console, "reading recipients", transient=as_json) as progress:
            bar = progress.add_task("read", total=lines, detail="")
            receipt = campaigns.submit({k: v for k, v in spec.items() if v is not None},
                                       _counted(read_recipients(file), progress, bar),
                                       service=_service_id(service))
    except SubmissionError as exc:
        raise _refused(exc) from None
    click.echo(receipt.model_dump_json(indent=None if as_json else 2))
    if follow:
        watch(str(receipt.campaign_id), console, transient=as_json)


def _counted(items: Iterator, progress, bar) -> Iterator:
    for n, item in enumerate(items, 1):
        if n % 1000 == 0:
            progress.update(bar, completed=n)
        yield item


def _refused(exc: SubmissionError) -> click.ClickException:
    lines = [str(exc)] + [f"  {'.'.join(map(str, e['loc'])) or 'submission'}: {e['msg']}" for e in exc.errors]
    return click.ClickException("\n".join(lines))


@main.group()
def suppress() -> None:
    """Suppression lists: opted-out numbers, per service (--service) or for all (--global)."""


_list_options = [click.option("--service", default="default", show_default=True, help="this service's list"),
                 click.option("--global", "global_list", is_flag=True, help="the global list every service honours")]


def _list_option(command):
    for option in reversed(_list_options):
        command = option(command)
    return command


def _list_id(service: str, global_list: bool) -> int | None:
    return None if global_list else _service_id(service)


def _print_change(change, as_json: bool, verb: str) -> None:
    data = {"changed": change.changed, "unchanged": change.unchanged,
            "invalid": [i.model_dump() for i in change.invalid]}
    if as_json:
        click.echo(json.dumps(data))
        return
    click.echo(f"{change.changed} {verb}, {change.unchanged} unchanged, {len(change.invalid)} invalid")
    for i in change.invalid:
        click.echo(f"  #{i.position}: {i.reason}", err=True)


_numbers_file = click.option("--file", "numbers_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                             help="also read numbers from this file (CSV, JSONL or one a line)")


def _numbers(numbers: tuple[str, ...], numbers_file: Path | None) -> list[str]:
    from campaigns.recipients import read_recipient
    from campaigns.recipients import InvalidRecipient
    from campaigns.sources import read_recipients

    out = list(numbers)
    for raw in read_recipients(numbers_file) if numbers_file else ():
        try:
            out.append(read_recipient(raw)[0])
        except InvalidRecipient:
            out.append("")  # counted as invalid, at its position
    return out


@suppress.command("add")
@click.argument("numbers", nargs=-1)
@_numbers_file
@click.option("--region", help="region for national numbers, e.g. GB")
@click.option("--reason", help="why, kept with each number")
@_list_option
@click.option("--json", "as_json", is_flag=True)
def suppress_add(numbers: tuple[str, ...], numbers_file: Path | None, region: str | None,
                 reason: str | None, service: str, global_list: bool, as_json: bool) -> None:
    """Opt numbers out of the service's campaigns (or, --global, of every campaign) from now on."""
    from campaigns import suppressions

    _print_change(suppressions.add(_numbers(numbers, numbers_file), service_id=_list_id(service, global_list),
                                   region=region, reason=reason), as_json, "added")


@suppress.command("remove")
@click.argument("numbers", nargs=-1)
@_numbers_file
@click.option("--region", help="region for national numbers, e.g. GB")
@_list_option
@click.option("--json", "as_json", is_flag=True)
def suppress_remove(numbers: tuple[str, ...], numbers_file: Path | None, region: str | None,
                    service: str, global_list: bool, as_json: bool) -> None:
    """Take numbers off a suppression list."""
    from campaigns import suppressions

    _print_change(suppressions.remove(_numbers(numbers, numbers_file), service_id=_list_id(service, global_list),
                                      region=region), as_json, "removed")


@suppress.command("list")
@_list_option
@click.option("--json", "as_json", is_flag=True, help="one JSON object a line")
def suppress_list(service: str, global_list: bool, as_json: bool) -> None:
    """Print every number of one list, in number order."""
    from campaigns import suppressions

    after, list_id = None, _list_id(service, global_list)
    while page := suppressions.entries(service_id=list_id, after=after):
        for e in page:
            if as_json:
                click.echo(json.dumps({"phone": e.phone, "reason": e.reason, "created_at": e.created_at.isoformat()}))
            else:
                click.echo(f"{e.phone}\t{e.created_at:%Y-%m-%d %H:%M}\t{e.reason or ''}")
        after = page[-1].phone


@main.command()
@click.argument("campaign_id")
@click.option("--follow", is_flag=True, help="show a progress bar until the campaign ends")
@json_option
def report(campaign_id: str, follow: bool, as_json: bool) -> None:
    """Print a campaign's exact aggregate as a table (`herald status` with --watch does the same)."""
    from campaigns.aggregate import campaign_report
    from worker.cli import status_view

    try:
        data = (status_view.watch(campaign_id, _err_console(), transient=as_json) if follow
                else campaign_report(campaign_id))
    except (HeraldError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(data))
    else:
        _out_console().print(status_view.summary_table(data))


@main.command("campaigns")
@click.option("--status", help="only campaigns in this status (running, completed, ...)")
@click.option("--limit", default=50, show_default=True, help="newest first, at most this many")
@click.option("--service", help="only this service's campaigns (default: every service's)")
@json_option
def list_campaigns(status: str | None, limit: int, service: str | None, as_json: bool) -> None:
    """List campaigns, newest first, with their progress."""
    from campaigns.overview import list_campaigns as overview
    from worker.cli.console import campaigns_table

    rows = overview(status, limit, _service_id(service) if service else None)
    if as_json:
        click.echo(json.dumps(rows))
    else:
        _out_console().print(campaigns_table(rows))


@main.command()
@click.argument("campaign_id")
@click.option("--watch", is_flag=True, help="redraw a live progress bar until the campaign ends")
@json_option
def status(campaign_id: str, watch: bool, as_json: bool) -> None:
    """Show a campaign's progress and aggregate."""
    from rich.console import Console

    from campaigns.aggregate import campaign_report
    from worker.cli import status_view

    console = Console(stderr=as_json)
    try:
        data = status_view.watch(campaign_id, console) if watch else campaign_report(campaign_id)
    except (HeraldError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(data))
    else:
        console.print(status_view.summary_table(data))


def _lifecycle_command(action: str, done: str, doc: str) -> None:
    @main.command(name=action, help=doc)
    @click.argument("campaign_id")
    @json_option
    def command(campaign_id: str, as_json: bool) -> None:
        from campaigns import lifecycle

        try:
            getattr(lifecycle, action)(campaign_id)
        except (HeraldError, ValueError) as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(json.dumps({"campaign_id": campaign_id, "status": done}) if as_json
                   else f"campaign {campaign_id} {done}")


_lifecycle_command("pause", "paused", "Stop starting new sends; sends in flight finish.")
_lifecycle_command("resume", "resumed", "Continue a paused campaign without resending anything.")
_lifecycle_command("cancel", "cancelled", "Cancel a campaign: queued messages become cancelled.")


@main.command()
@json_option
def webhooks(as_json: bool) -> None:
    """Print each provider account's account-level webhook URLs (MobSMS status and incoming)."""
    from campaigns.signing import account_webhooks

    urls = account_webhooks()
    if as_json:
        click.echo(json.dumps(urls))
        return
    for u in urls:
        click.echo(f"{u['account']} {u['event']}: {u['url']}")


@main.command()
@json_option
def doctor(as_json: bool) -> None:
    """Check the database, broker, limits Redis, secret, public URL and provider accounts; 1 on a problem."""
    import logging

    from worker.cli import doctor as doctor_module

    logging.getLogger().setLevel(logging.WARNING)  # no migration chatter around the findings
    sys.exit(doctor_module.run(as_json))


if __name__ == "__main__":
    main()
