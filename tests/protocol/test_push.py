"""protocol.push: registrations, notice bodies, and what each provider answer means."""

import json

import msgspec
import pytest

from protocol.push import (
    Notice, Platform, Registration, Verdict, apns_payload, apns_verdict, fcm_message, fcm_verdict,
)

NOTICE = Notice("appointment.created", "ev-1", "t1")


def fcm_error(status: int, state: str, *details: dict) -> bytes:
    return json.dumps({"error": {"code": status, "status": state, "details": list(details)}}).encode()


FCM_DETAIL = {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError"}
BAD_REQUEST = {"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [{"field": "message.data"}]}


@pytest.mark.parametrize("body, accepted", [
    ({"platform": "apns", "token": "ab" * 32}, True),
    ({"platform": "apns", "token": "zz" * 32}, False),  # not hexadecimal
    ({"platform": "apns", "token": "abc"}, False),
    ({"platform": "fcm", "token": "dGVzdA:APA91b_x-y.z0123456789"}, True),
    ({"platform": "fcm", "token": "has space 0123456789"}, False),
    ({"platform": "gcm", "token": "dGVzdA:APA91b_x-y.z0123456789"}, False),
    ({"platform": "fcm", "token": "dGVzdA:APA91b_x-y.z0123456789", "user": "someone"}, False),  # unknown field
])
def test_registrations_are_checked(body, accepted):
    try:
        registration = msgspec.json.decode(json.dumps(body), type=Registration)
    except msgspec.ValidationError:
        assert not accepted
    else:
        assert accepted and registration.platform is Platform(body["platform"])


def test_notices_carry_the_fixed_text_and_ids_only():
    message = json.loads(fcm_message("tok", NOTICE, "Title", "Body"))["message"]
    assert message == {"token": "tok", "notification": {"title": "Title", "body": "Body"},
                       "data": {"event": "appointment.created", "id": "ev-1", "tenant": "t1"}}
    assert json.loads(apns_payload(NOTICE, "Title", "Body")) == {
        "aps": {"alert": {"title": "Title", "body": "Body"}}, "event": "appointment.created", "id": "ev-1",
        "tenant": "t1"}


@pytest.mark.parametrize("status, body, verdict", [
    (200, b'{"name": "projects/p/messages/1"}', Verdict.SENT),
    (404, fcm_error(404, "NOT_FOUND", {**FCM_DETAIL, "errorCode": "UNREGISTERED"}), Verdict.INVALID_TOKEN),
    (400, fcm_error(400, "INVALID_ARGUMENT", {**FCM_DETAIL, "errorCode": "INVALID_ARGUMENT"}), Verdict.INVALID_TOKEN),
    (400, fcm_error(400, "INVALID_ARGUMENT", BAD_REQUEST), Verdict.FAILED),  # our message, not the device
    (401, fcm_error(401, "UNAUTHENTICATED"), Verdict.RENEW_CREDENTIALS),
    (403, fcm_error(403, "PERMISSION_DENIED", {**FCM_DETAIL, "errorCode": "SENDER_ID_MISMATCH"}), Verdict.FAILED),
    (429, fcm_error(429, "RESOURCE_EXHAUSTED", {**FCM_DETAIL, "errorCode": "QUOTA_EXCEEDED"}), Verdict.RETRY),
    (503, b"<html>Service Unavailable</html>", Verdict.RETRY),
])
def test_fcm_answers(status, body, verdict):
    assert fcm_verdict(status, body)[0] is verdict


@pytest.mark.parametrize("status, reason, verdict", [
    (200, None, Verdict.SENT),
    (410, "Unregistered", Verdict.INVALID_TOKEN),
    (400, "BadDeviceToken", Verdict.INVALID_TOKEN),
    (400, "DeviceTokenNotForTopic", Verdict.INVALID_TOKEN),
    (403, "ExpiredProviderToken", Verdict.RENEW_CREDENTIALS),
    (403, "InvalidProviderToken", Verdict.FAILED),
    (400, "PayloadTooLarge", Verdict.FAILED),
    (429, "TooManyRequests", Verdict.RETRY),
    (503, "ServiceUnavailable", Verdict.RETRY),
])
def test_apns_answers(status, reason, verdict):
    body = json.dumps({"reason": reason}).encode() if reason else b""
    assert apns_verdict(status, body) == (verdict, reason or "sent")
