"""Intake on the real PostgreSQL: atomic refusals, streaming, idempotency, per-recipient reasons."""

import uuid

import pytest
from sqlalchemy import func, select

from campaigns import db, intake
from campaigns.errors import SubmissionError, TooManyRecipients
from campaigns.models import Campaign, Message, Rejection
from campaigns.schema import CampaignSpec, Submission, parse
from campaigns.settings import configure, get_settings


def _spec(**extra):
    return CampaignSpec.model_validate({"from": "Herald", "message": "Hi", "default_region": "GB", **extra})


def _numbers(n, start=0):
    return (f"+4474{i:08d}" for i in range(start, start + n))


def _rows():
    with db.session() as s:
        return tuple(s.scalar(select(func.count()).select_from(t)) for t in (Campaign, Message, Rejection))


def _failing_after(n, exc):
    yield from _numbers(n)
    raise exc


@pytest.mark.parametrize("cause", ["max_cost", "source breaks", "too many"])
def test_a_failure_before_commit_leaves_no_trace(services, cause, monkeypatch):
    # Each fails after more than one chunk was already written with COPY, inside the transaction.
    monkeypatch.setattr(intake, "CHUNK", 200)
    n = 3 * intake.CHUNK + 50
    if cause == "max_cost":
        call = lambda: intake.submit(_spec(max_cost="1.00"), _numbers(n))  # 0.05 a segment: 32.50
        expected = SubmissionError
    elif cause == "source breaks":
        call = lambda: intake.submit(_spec(), _failing_after(n, OSError("disk went away")))
        expected = OSError
    else:
        configure(get_settings().model_copy(update={"max_recipients": intake.CHUNK + 10}))
        call = lambda: intake.submit(_spec(), _numbers(n))
        expected = TooManyRecipients
    with pytest.raises(expected) as caught:
        call()
    assert _rows() == (0, 0, 0)
    if cause == "too many":
        assert f"at most {intake.CHUNK + 10:,} recipients" in str(caught.value)
    if cause == "max_cost":
        assert caught.value.errors[0]["loc"] == ["max_cost"]


def test_recipients_are_streamed_chunk_by_chunk(services, monkeypatch):
    monkeypatch.setattr(intake, "CHUNK", 500)
    pulled = 0
    pulled_at_writes = []

    def source():
        nonlocal pulled
        for number in _numbers(3 * intake.CHUNK):
            pulled += 1
            yield number

    write = intake._write

    def recording_write(s, model, columns, rows):
        if model is Message:
            pulled_at_writes.append(pulled)
        write(s, model, columns, rows)

    monkeypatch.setattr(intake, "_write", recording_write)
    receipt = intake.submit(_spec(), source())
    assert receipt.accepted == 3 * intake.CHUNK
    assert pulled_at_writes == [intake.CHUNK, 2 * intake.CHUNK, 3 * intake.CHUNK]


def _mixed(n):
    """Strings and objects, invalid ones, and duplicates written otherwise with another name."""
    for i in range(n):
        if i % 17 == 0:
            yield "not a number"
        elif i % 5 == 0:
            yield {"to": f"07400 {i - 3:06d}", "name": f"later {i}"}  # the same number as recipient i - 3
        else:
            yield {"to": f"+447400{i:06d}", "name": f"first {i}"}


def _stored(receipt):
    cid = uuid.UUID(receipt.campaign_id)
    with db.session() as s:
        messages = s.execute(select(Message.phone, Message.body).where(Message.campaign_id == cid)
                             .order_by(Message.id)).all()
        rejections = s.execute(select(Rejection.position, Rejection.kind, Rejection.reason, Rejection.raw)
                               .where(Rejection.campaign_id == cid).order_by(Rejection.position)).all()
    return [tuple(m) for m in messages], [tuple(r) for r in rejections]


def test_a_large_submission_is_normalised_in_a_process_pool_with_the_same_outcome(services, monkeypatch):
    # Given a submission past the pool's threshold (both made small here so that many chunks go
    # through the pool), with duplicates whose first occurrence must win and invalid numbers
    monkeypatch.setattr(intake, "CHUNK", 200)
    monkeypatch.setattr(intake, "POOL_AFTER", 400)
    n = 3000
    submitted = []

    class CountingPool(intake.ProcessPoolExecutor):
        def submit(self, fn, *args, **kwargs):
            submitted.append(len(args[0]))
            return super().submit(fn, *args, **kwargs)

    monkeypatch.setattr(intake, "ProcessPoolExecutor", CountingPool)
    pulled = 0
    ahead = []

    def source():
        nonlocal pulled
        for raw in _mixed(n):
            pulled += 1
            yield raw

    write = intake._write
    written = 0

    def recording_write(s, model, columns, rows):
        nonlocal written
        if model is Rejection:  # the last write of a chunk
            written = max(written, max((r[1] for r in rows), default=written))
            ahead.append(pulled - written)
        write(s, model, columns, rows)

    monkeypatch.setattr(intake, "_write", recording_write)
    spec = _spec(message="Hi {name}")

    # When it is taken with a pool of two processes, and again in this process alone
    configure(get_settings().model_copy(update={"intake_processes": 2}))
    pooled = intake.submit(spec, source())
    configure(get_settings().model_copy(update={"intake_processes": 1}))
    alone = intake.submit(spec, _mixed(n))

    # Then the pool took every chunk past the threshold, never read more than its window ahead
    # (memory stays flat), and the outcome is exactly the in-process one: first occurrences won
    assert sum(submitted) == n - 400 and max(submitted) == 200
    assert max(ahead) <= 200 * (2 * intake.AHEAD + 1)
    assert pooled.model_dump(exclude={"campaign_id"}) == alone.model_dump(exclude={"campaign_id"})
    first_name, invalid = {}, 0  # an independent count: "07400 ..." repeats "+447400..."
    for raw in _mixed(n):
        if isinstance(raw, str):
            invalid += 1
        else:
            e164 = "+44" + raw["to"].replace(" ", "")[1:] if raw["to"].startswith("0") else raw["to"]
            first_name.setdefault(e164, raw["name"])
    accepted = len(first_name)
    assert (pooled.accepted, pooled.duplicates, pooled.invalid) == (accepted, n - invalid - accepted, invalid)
    assert pooled.duplicates > 400
    assert _stored(pooled) == _stored(alone)
    messages, rejections = _stored(pooled)
    assert dict(messages) == {e164: f"Hi {name}" for e164, name in first_name.items()}
    assert ("+447400000002", "Hi first 2") in messages
    assert (5, "duplicate", "duplicate of an earlier recipient", "+447400000002") in rejections


def test_one_bad_recipient_never_sinks_the_campaign(services):
    recipients = [
        "+447400000001",
        {"to": "+447400000002", "client_ref": "x" * 300},
        {"to": "+447400000003", "callback_url": "ftp://nope"},
        {"number": 447400000004},
        {"name": "no number"},
        ["+447400000005"],
        {"to": "+447400000006", "client_ref": "ok", "callback_url": "https://example.com/cb"},
    ]
    receipt = intake.submit(_spec(message="Hi {name}"), recipients)
    assert (receipt.submitted, receipt.accepted, receipt.invalid) == (7, 0, 7)
    assert [r.reason for r in receipt.invalid_reasons] == [
        "missing template field 'name'",
        "client_ref must be a string of at most 255 characters",
        "callback_url must be an http(s) URL with a host, at most 2048 characters",
        "the number must be a string",
        "no number under 'to' or 'number'",
        "a recipient must be a string or an object",
        "missing template field 'name'",
    ]
    receipt = intake.submit(_spec(), recipients)
    assert (receipt.accepted, receipt.invalid) == (2, 5)
    with db.session() as s:
        stored = s.execute(select(Message.client_ref, Message.callback_url).where(
            Message.campaign_id == uuid.UUID(receipt.campaign_id), Message.client_ref.is_not(None))).one()
        kinds = dict(s.execute(select(Rejection.kind, func.count()).where(
            Rejection.campaign_id == uuid.UUID(receipt.campaign_id)).group_by(Rejection.kind)).all())
    assert tuple(stored) == ("ok", "https://example.com/cb")
    assert kinds == {"invalid": 5}


def test_idempotency_key_returns_the_first_receipt_and_writes_nothing(services):
    first = intake.submit(_spec(idempotency_key="k-1"), list(_numbers(10)))
    before = _rows()
    assert intake.submit(_spec(idempotency_key="k-1"), list(_numbers(10))) == first
    assert _rows() == before


def test_an_idempotency_key_reused_with_another_body_is_refused_naming_the_fields(services):
    from campaigns.errors import IdempotencyMismatch

    intake.submit(_spec(idempotency_key="k-1"), list(_numbers(10)))
    before = _rows()
    with pytest.raises(IdempotencyMismatch) as caught:
        intake.submit(_spec(idempotency_key="k-1", message="different"), list(_numbers(20)))
    assert {e["loc"][0] for e in caught.value.errors} == {"message", "recipients"}
    assert _rows() == before


def test_personalised_bodies_are_stored_with_their_own_segments(services):
    receipt = intake.submit(_spec(message="Hi {name}!"), [
        {"to": "+447400000001", "name": "Ann"},
        {"to": "+447400000002", "name": "Ярослава"},       # UCS-2
        {"to": "+447400000003", "name": "Я" * 100},        # two UCS-2 parts, within TikoSMS's 160 characters
    ])
    with db.session() as s:
        rows = s.execute(select(Message.body, Message.encoding, Message.segments).where(
            Message.campaign_id == uuid.UUID(receipt.campaign_id)).order_by(Message.phone)).all()
    assert [(r.encoding, r.segments) for r in rows] == [("GSM7", 1), ("UCS2", 1), ("UCS2", 2)]
    assert rows[0].body == "Hi Ann!"
    assert receipt.segments == 4


def test_parse_names_each_bad_field():
    with pytest.raises(SubmissionError) as caught:
        parse(Submission, {"from": "H", "message": "m", "recipients": ["+1"], "default_region": "GBR",
                           "send_window": {"start": "9", "end": "20:00"}, "max_cost": -1})
    assert sorted(tuple(e["loc"]) for e in caught.value.errors) == [
        ("default_region",), ("max_cost",), ("send_window", "start")]
    assert all("input" not in e for e in caught.value.errors)


def test_files_are_read_one_recipient_at_a_time(tmp_path):
    from campaigns.recipients import InvalidRecipient, read_recipient
    from campaigns.sources import read_recipients

    spreadsheet = tmp_path / "export.csv"  # a spreadsheet's export: BOM, CRLF, capitalised header
    spreadsheet.write_bytes("\ufeffName,To\r\nAnn,07400 123456\r\n\r\nBob,+254712345678\r\n".encode())
    assert list(read_recipients(spreadsheet)) == [{"name": "Ann", "to": "07400 123456"},
                                                  {"name": "Bob", "to": "+254712345678"}]
    lines = tmp_path / "numbers.txt"
    lines.write_text("+447400123456\n\n07400 123457\n")
    assert list(read_recipients(lines)) == ["+447400123456", "07400 123457"]

    jsonl = tmp_path / "people.jsonl"
    jsonl.write_text('"+447400123456"\n{"to": "+254712345678", "name": "Wanjiru"}\n{not json\n')
    first, second, broken = read_recipients(jsonl)
    assert (first, second["name"]) == ("+447400123456", "Wanjiru")
    with pytest.raises(InvalidRecipient, match="not valid JSON"):
        read_recipient(broken)


def test_the_fork_server_preloads_what_the_main_module_imports(tmp_path):
    """Each intake pool process runs the main module again; the fork server imports its modules
    first so that their pages are shared, not loaded once per process (herald's: ~60 MB each)."""
    import subprocess
    import sys

    script = tmp_path / "entry"  # like a console script: a path with no .py and no __spec__
    script.write_text("import re\nfrom worker.cli import main\nfrom campaigns.intake import _main_imports\n"
                      "print(_main_imports())\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True).stdout
    assert eval(out) == ["campaigns.intake", "re", "worker.cli.commands"]  # where main is defined
