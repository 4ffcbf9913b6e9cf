"""The run's CA and what it signs (egress/identity.py), read back with `cryptography`:
each certificate says exactly what it may be used for, and no more."""

from __future__ import annotations

import datetime
import hashlib
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, load_pem_private_key
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sandbox_orch.egress.identity import SERVER_NAME, SKEW, VALIDITY, RunAuthority, fingerprint


def _cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def _extension(cert: x509.Certificate, kind: type) -> x509.Extension:
    return cert.extensions.get_extension_for_class(kind)


def _common_name(name: x509.Name) -> str:
    return str(name.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


USAGES = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
)  # fmt: skip (encipher_only and decipher_only mean something only with key_agreement)


def _usages(cert: x509.Certificate) -> dict[str, bool]:
    usage = _extension(cert, x509.KeyUsage)
    assert usage.critical
    return {name: getattr(usage.value, name) for name in USAGES}


def test_the_ca_signs_certificates_and_nothing_else():
    ca = _cert(RunAuthority("r-1").ca_pem)
    assert _common_name(ca.subject) == "sandbox-orch run r-1 egress CA"
    assert ca.issuer == ca.subject
    constraints = _extension(ca, x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    assert _usages(ca) == {name: name in ("key_cert_sign", "crl_sign") for name in USAGES}


def test_the_proxys_certificate_serves_its_name_only():
    authority = RunAuthority("r-1")
    server = authority.server()
    cert = _cert(server.cert_pem)
    assert _common_name(cert.subject) == SERVER_NAME
    assert cert.issuer == _cert(authority.ca_pem).subject
    names = _extension(cert, x509.SubjectAlternativeName)
    assert names.value.get_values_for_type(x509.DNSName) == [SERVER_NAME]
    purposes = _extension(cert, x509.ExtendedKeyUsage)
    assert list(purposes.value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not names.critical and not purposes.critical  # the usual: clients may ignore them
    constraints = _extension(cert, x509.BasicConstraints)
    assert constraints.critical and not constraints.value.ca
    assert _usages(cert) == {name: name == "digital_signature" for name in USAGES}
    assert _common_name(_cert(authority.server("other").cert_pem).subject) == "other"


def test_a_nodes_certificate_is_a_client_certificate_signed_by_the_ca():
    authority = RunAuthority("r-1")
    node = authority.node("fetch")
    cert = _cert(node.cert_pem)
    assert _common_name(cert.subject) == "node fetch"
    purposes = _extension(cert, x509.ExtendedKeyUsage)
    assert list(purposes.value) == [ExtendedKeyUsageOID.CLIENT_AUTH] and not purposes.critical
    names = _extension(cert, x509.SubjectAlternativeName)
    uris = names.value.get_values_for_type(x509.UniformResourceIdentifier)
    assert uris == ["urn:sandbox-orch:node"] and not names.critical
    assert not _extension(cert, x509.BasicConstraints).value.ca
    assert _usages(cert) == {name: name == "digital_signature" for name in USAGES}
    issuer = _cert(authority.ca_pem).public_key()
    assert isinstance(issuer, ec.EllipticCurvePublicKey)
    issuer.verify(
        cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm)
    )
    key = load_pem_private_key(node.key_pem, password=None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()
    assert node.fingerprint == hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()
    assert node.fingerprint == fingerprint(cert.public_bytes(Encoding.DER))
    assert "PRIVATE" not in repr(node) and node.key_pem.decode() not in repr(node)


@pytest.fixture(params=["UTC", "UTC-09:00"])
def local_zone(request, monkeypatch):
    """This host's time zone: the validity is in UTC whatever it is."""
    monkeypatch.setenv("TZ", request.param)
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_every_certificate_is_new_and_valid_from_a_little_before_now_for_a_day(local_zone):
    authority = RunAuthority("r-1")
    first, second = authority.node("a"), authority.node("a")
    assert first.fingerprint != second.fingerprint and first.key_pem != second.key_pem
    now = datetime.datetime.now(datetime.UTC)
    for pem in (authority.ca_pem, first.cert_pem, authority.server().cert_pem):
        cert = _cert(pem)
        start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
        assert abs((now - SKEW) - start) < datetime.timedelta(seconds=5)
        assert abs((now + VALIDITY) - end) < datetime.timedelta(seconds=5)


def test_long_names_are_cut_to_what_a_common_name_may_hold():
    authority = RunAuthority("r" * 100)
    assert len(_common_name(_cert(authority.ca_pem).subject)) == 64
    node = _cert(authority.node("n" * 100).cert_pem)
    assert _common_name(node.subject) == ("node " + "n" * 100)[:64]
