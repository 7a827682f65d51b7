import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from protocol.catalog import Namespace
from protocol.errors import CloseCode, ReplyError
from rtserver.backends.auth import AuthError, Claims, TokenVerifier, admit, authorize_room, auto_rooms, mint_token
from rtserver.backends.config import AuthConfig
from tests.support.tokens import unsigned_token

SECRET = "test-secret-0123456789abcdef0123456789abcdef0123456789abcdef"
STAFF = {"sub": "u1", "healthUnitTaxId": "t1", "roles": ["attendant"], "professionalTaxId": "p9",
         "specialityIds": ["s1", "s2"]}
PATIENT = {"sub": "u2", "healthUnitTaxId": "t1", "roles": ["patient"], "patientTaxId": "pt1",
           "threadIds": ["th1"]}


def hs_verifier(**kw):
    return TokenVerifier(AuthConfig(hs256_secret=SECRET, **kw))


def test_hs256_tokens_are_verified_into_typed_claims():
    claims = hs_verifier().verify(mint_token(SECRET, STAFF))
    assert (claims.user, claims.tenant, claims.professional, claims.specialities) == ("u1", "t1", "p9", ("s1", "s2"))
    assert claims.presence_groups == ("attendants",) and claims.is_staff and not claims.is_patient


@pytest.mark.parametrize("make, code", [
    (lambda: mint_token("another-secret-0123456789abcdef0123456789", STAFF), CloseCode.UNAUTHENTICATED),
    (lambda: mint_token(SECRET, STAFF, ttl_s=-60), CloseCode.TOKEN_EXPIRED),
    (lambda: "not.a.token", CloseCode.UNAUTHENTICATED),
    (lambda: mint_token(SECRET, {"healthUnitTaxId": "t1", "roles": ["attendant"]}), CloseCode.UNAUTHENTICATED),
    (lambda: jwt.encode({**STAFF, "exp": time.time() + 60}, SECRET, algorithm="HS512"), CloseCode.UNAUTHENTICATED),
])
def test_bad_tokens_are_refused_with_their_close_code(make, code):
    with pytest.raises(AuthError) as info:
        hs_verifier().verify(make())
    assert info.value.disconnect is code


def test_alg_none_is_refused():
    with pytest.raises(AuthError, match="'none' is not accepted"):
        hs_verifier().verify(unsigned_token(STAFF))


def test_rs256_with_a_public_key_file_and_no_hs_confusion(tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "pub.pem").write_bytes(pem)
    verifier = TokenVerifier(AuthConfig(public_key_file=str(tmp_path / "pub.pem")))
    token = jwt.encode({**STAFF, "exp": int(time.time()) + 60}, key, algorithm="RS256")
    assert verifier.verify(token).user == "u1"
    # An HS256 token "signed" with the public key as HMAC secret (key confusion) must not pass.
    header, payload, _ = unsigned_token(STAFF).split(".")
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=").decode()
    signature = hmac.new(pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    forged = f"{header}.{payload}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"
    with pytest.raises(AuthError, match="HS256 tokens are not accepted"):
        verifier.verify(forged)


def test_es256_with_a_jwks_file_chooses_the_key_by_kid(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "alg": "ES256", "use": "sig"}]}))
    verifier = TokenVerifier(AuthConfig(jwks_file=str(tmp_path / "jwks.json")))
    token = jwt.encode({**STAFF, "exp": int(time.time()) + 60}, key, algorithm="ES256", headers={"kid": "k1"})
    assert verifier.verify(token).user == "u1"
    other = jwt.encode({**STAFF, "exp": int(time.time()) + 60}, key, algorithm="ES256", headers={"kid": "k2"})
    with pytest.raises(AuthError, match="unknown key id"):
        verifier.verify(other)


def test_namespaces_admit_their_audience_only():
    staff, patient = Claims.from_payload(STAFF), Claims.from_payload(PATIENT)
    admit(staff, Namespace.HUB)
    admit(patient, Namespace.PORTAL)
    for claims, ns in ((staff, Namespace.PORTAL), (patient, Namespace.HUB)):
        with pytest.raises(AuthError) as info:
            admit(claims, ns)
        assert info.value.disconnect is CloseCode.FORBIDDEN


def test_auto_join_follows_the_claims():
    assert auto_rooms(Claims.from_payload(STAFF), Namespace.HUB) == [
        "tenant:t1", "user:u1", "professional:p9", "speciality:s1", "speciality:s2"]
    assert auto_rooms(Claims.from_payload(PATIENT), Namespace.PORTAL) == ["user:u2", "patient:pt1"]


@pytest.mark.parametrize("claims, ns, room, allowed", [
    (STAFF, Namespace.HUB, "schedule:42", True),
    (STAFF, Namespace.HUB, "patient:anyone", True),
    (STAFF, Namespace.HUB, "thread:any", True),
    (STAFF, Namespace.HUB, "presence:attendants", True),
    (STAFF, Namespace.HUB, "tenant:t1", True),
    (STAFF, Namespace.HUB, "tenant:t2", False),
    (STAFF, Namespace.HUB, "user:someone-else", False),
    (STAFF, Namespace.HUB, "probe:x", True),
    (PATIENT, Namespace.PORTAL, "patient:pt1", True),
    (PATIENT, Namespace.PORTAL, "patient:pt2", False),
    (PATIENT, Namespace.PORTAL, "thread:th1", True),
    (PATIENT, Namespace.PORTAL, "thread:th2", False),
    (PATIENT, Namespace.PORTAL, "schedule:42", False),
    (PATIENT, Namespace.PORTAL, "tenant:t1", False),
    (PATIENT, Namespace.PORTAL, "presence:attendants", False),
])
def test_subscriptions_are_authorized_against_claims(claims, ns, room, allowed):
    if allowed:
        authorize_room(Claims.from_payload(claims), ns, room)
    else:
        with pytest.raises(ReplyError, match="not allowed"):
            authorize_room(Claims.from_payload(claims), ns, room)


def _jwks_verifier(tmp_path):
    """A verifier with a JWKS of an RSA key (``rsa1``) and a P-256 key (``ec1``)."""
    rsa_key, ec_key = rsa.generate_private_key(public_exponent=65537, key_size=2048), ec.generate_private_key(
        ec.SECP256R1())
    keys = [{**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key())), "kid": "rsa1"},
            {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key())), "kid": "ec1"}]
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": keys}))
    return TokenVerifier(AuthConfig(jwks_file=str(tmp_path / "jwks.json"))), rsa_key, ec_key


def test_a_token_naming_a_key_of_another_family_is_refused_not_raised(tmp_path):
    verifier, rsa_key, ec_key = _jwks_verifier(tmp_path)
    claims = {**STAFF, "exp": int(time.time()) + 60}
    assert verifier.verify(jwt.encode(claims, ec_key, algorithm="ES256", headers={"kid": "ec1"})).user == "u1"
    for token in (jwt.encode(claims, ec_key, algorithm="ES256", headers={"kid": "rsa1"}),
                  jwt.encode(claims, rsa_key, algorithm="RS256", headers={"kid": "ec1"})):
        with pytest.raises(AuthError, match="is not a key for") as info:
            verifier.verify(token)
        assert info.value.disconnect is CloseCode.UNAUTHENTICATED


def test_a_public_key_verifies_only_tokens_of_its_family(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "ec.pem").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    verifier = TokenVerifier(AuthConfig(public_key_file=str(tmp_path / "ec.pem")))
    rsa_token = jwt.encode({**STAFF, "exp": int(time.time()) + 60},
                           rsa.generate_private_key(public_exponent=65537, key_size=2048), algorithm="RS256")
    with pytest.raises(AuthError, match="not a key for RS256"):
        verifier.verify(rsa_token)


@pytest.mark.parametrize("claim, value", [
    ("healthUnitTaxId", "t1:schedule:1"), ("healthUnitTaxId", "t1,t2"), ("healthUnitTaxId", "t1\u0000"),
    ("healthUnitTaxId", " t1 "), ("healthUnitTaxId", "t1\n"), ("healthUnitTaxId", 7), ("sub", "a,b"),
    ("sub", "a/b"), ("sub", "x" * 129), ("sub", ["u1"]), ("threadIds", "th1"), ("threadIds", ["a b"]),
    ("presenceGroups", ["g\n"]), ("specialityIds", [1]), ("patientTaxId", {"id": 1}), ("roles", "attendant"),
])
def test_claims_that_break_their_format_are_refused_with_4403_naming_the_claim(claim, value):
    with pytest.raises(AuthError) as info:
        Claims.from_payload({**STAFF, claim: value})
    assert info.value.disconnect is CloseCode.FORBIDDEN and info.value.status == 403
    assert repr(claim) in info.value.message


@pytest.mark.parametrize("sub", ["auth0|5f7c8ec7c33c6c004bbafe82", "google-oauth2|112233445566778899",
                                 "ana+test@example.org", "samlp|clinic-idp|ana.souza@example.org", "00u1abcd2EFGH3ijk4x7"])
def test_the_subjects_identity_providers_issue_are_admitted_with_their_user_room(sub):
    claims = Claims.from_payload({**STAFF, "sub": sub})
    assert f"user:{sub}" in auto_rooms(claims, Namespace.HUB)
    authorize_room(claims, Namespace.HUB, f"user:{sub}")
