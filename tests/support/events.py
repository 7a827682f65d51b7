"""Events as a backbone publishes them."""

from __future__ import annotations

def appointment(i, tenant="t1", rooms=("professional:1",), **extra):
    return {"event": "appointment.created", "tenant": tenant, "rooms": list(rooms),
            "data": {"appointmentId": str(i)}, **extra}
