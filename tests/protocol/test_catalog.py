import pytest

from protocol.catalog import Catalog, Coalesce, Delivery, Namespace
from protocol.errors import ReplyCode, ReplyError

SERVER_EVENTS = """schedule.slots.generated schedule.slots.changed appointment.created
appointment.status.changed forwarding.created forwarding.status.changed admin.job.progress
critical_alert conversation_update priority_update patient_status_change new_patient
attendant:online attendant:offline attendant:away queue:new queue:taken queue:updated
thread:message thread:typing chat:accepted chat:ended rt.probe""".split()
CLIENT_EVENTS = "presence:online presence:away heartbeat typing:start typing:stop mark_alert_read".split()
# made by the server (snapshots on subscribe, digests of bursts, forwarded HTTP commands), never published
INTERNAL_EVENTS = ["presence:snapshot", "schedule.snapshot", "schedule.digest", "session.command"]

catalog = Catalog.default()


def test_every_event_of_the_spec_is_declared_once():
    assert set(SERVER_EVENTS) | set(CLIENT_EVENTS) | set(INTERNAL_EVENTS) == set(catalog.types)
    for name in INTERNAL_EVENTS:
        room = {"presence": "presence:attendants", "session": "session:s1"}.get(name.split(":")[0].split(".")[0],
                                                                                "schedule:1")
        with pytest.raises(ReplyError, match="made by rtserver"):
            catalog.validate_publish(name, "t1", [room], {})
    assert all(not catalog.get(name).emitters for name in SERVER_EVENTS)
    assert all(catalog.get(name).emitters for name in CLIENT_EVENTS)


def test_declared_delivery_and_coalescing_rules():
    assert catalog.get("rt.probe").durable and catalog.get("rt.probe").coalesce.kind is Coalesce.NONE
    assert catalog.get("rt.probe").fields == {"t", "s", "p"}
    assert catalog.get("thread:typing").delivery is Delivery.EPHEMERAL
    assert catalog.get("attendant:online").delivery is Delivery.EPHEMERAL
    assert catalog.get("schedule.slots.changed").coalesce.kind is Coalesce.DIGEST
    assert catalog.get("admin.job.progress").coalesce.key == ("jobId",)
    rule = catalog.get("priority_update").coalesce
    assert (rule.kind, rule.key, rule.interval_ms) == (Coalesce.LATEST, ("patientId",), 1000)
    assert Namespace.PORTAL not in catalog.get("mark_alert_read").emitters


def test_a_valid_event_passes_ingest():
    etype = catalog.validate_publish("appointment.created", "t1", ["schedule:42", "patient:p1"],
                                     {"appointmentId": "a1", "status": "booked"})
    assert etype.name == "appointment.created"


@pytest.mark.parametrize("event, tenant, rooms, data, code, fragment", [
    ("nope", "t1", ["schedule:1"], {}, ReplyCode.UNKNOWN_EVENT, "unknown event type"),
    ("appointment.created", "t1", ["schedule:1"], {"patientName": "x"}, ReplyCode.BAD_PAYLOAD, "patientName"),
    ("appointment.created", "t1", ["thread:1"], {}, ReplyCode.BAD_ROOM, "thread"),
    ("appointment.created", "", ["schedule:1"], {}, ReplyCode.BAD_PAYLOAD, "tenant"),
    ("appointment.created", "t1", [], {}, ReplyCode.BAD_ROOM, "at least one room"),
    ("appointment.created", "t1", ["tenant:t2"], {}, ReplyCode.BAD_ROOM, "another tenant"),
    ("appointment.created", "t1", ["schedule"], {}, ReplyCode.BAD_ROOM, "kind:id"),
    ("typing:start", "t1", ["thread:1"], {}, ReplyCode.UNKNOWN_EVENT, "client event"),
])
def test_ingest_refuses_with_a_message_naming_the_fault(event, tenant, rooms, data, code, fragment):
    with pytest.raises(ReplyError) as info:
        catalog.validate_publish(event, tenant, rooms, data)
    assert info.value.code is code
    assert fragment in info.value.message


def test_allow_lists_can_be_tightened_or_widened_by_configuration():
    custom = catalog.with_fields({"critical_alert": ["id", "patientId", "ward"]})
    custom.validate_publish("critical_alert", "t1", ["tenant:t1"], {"ward": "3B"})
    with pytest.raises(ReplyError):
        custom.validate_publish("critical_alert", "t1", ["tenant:t1"], {"severity": "high"})
    with pytest.raises(ValueError, match="unknown event type"):
        catalog.with_fields({"nope": []})


def test_the_protocol_document_lists_every_event_and_close_code():
    import pathlib

    from protocol.errors import CloseCode, ReplyCode

    doc = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
    assert all(f"`{name}`" in doc for name in catalog.types)
    assert all(f"| {d.code} |" in doc for d in CloseCode.all())
    assert all(f"| {int(c)} | {c.name}" in doc for c in ReplyCode)
