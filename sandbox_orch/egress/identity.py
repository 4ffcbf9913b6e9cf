"""Who is talking to a run's proxy pod: a certificate per node, from the run's own CA.

On Docker each node has a Unix socket of its own, so the proxy knows whose allowlist
applies without trusting anything the node says. On Kubernetes the nodes reach one proxy
pod over the pod network instead, so each node gets a client certificate, and the proxy
tells nodes apart by the certificate's fingerprint (mutual TLS; remote.py). The node's
key stays in its own pod (its Secret); another node cannot present it.

The run's CA exists only in this process, for the run's length: it signs the proxy's
server certificate (the name nodes check, SERVER_NAME) and one client certificate per
node, then is forgotten. Keys are P-256, certificates valid for a day (a run is refused
past its timeouts long before). Host side only: the proxy pod checks certificates with
`ssl` alone, so its image does not need `cryptography`.
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVER_NAME = "sandbox-orch-egress-proxy"  # the proxy's certificate names this; nodes check it
VALIDITY = datetime.timedelta(days=1)
SKEW = datetime.timedelta(minutes=5)  # a cluster's clocks may be a little behind this host's
KEY_USAGES = (
    "digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
    "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only",
)  # fmt: skip


@dataclass(frozen=True)
class Credential:
    """A certificate and its key (PEM), and the certificate's SHA-256 (hex, of its DER)."""

    cert_pem: bytes
    key_pem: bytes = field(repr=False)
    fingerprint: str


def fingerprint(der: bytes) -> str:
    """What the proxy compares: the SHA-256 of the certificate as the peer sent it."""
    return hashlib.sha256(der).hexdigest()


class RunAuthority:
    """The run's CA: its certificate for both sides to trust, and the credentials it signs."""

    def __init__(self, run_id: str) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._subject = _name(f"sandbox-orch run {run_id} egress CA"[:64])
        self._cert = (
            self._builder(self._subject, self._key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_usage("key_cert_sign", "crl_sign"), critical=True)
            .sign(self._key, hashes.SHA256())
        )

    @property
    def ca_pem(self) -> bytes:
        return self._cert.public_bytes(Encoding.PEM)

    def server(self, name: str = SERVER_NAME) -> Credential:
        """The proxy pod's: nodes verify it against `ca_pem` and SERVER_NAME (another
        `name`: a certificate nodes must refuse, for tests of that)."""
        names = x509.SubjectAlternativeName([x509.DNSName(name)])
        return self._issue(name, names, ExtendedKeyUsageOID.SERVER_AUTH)

    def node(self, node: str) -> Credential:
        """A node's client certificate (its name in the subject, for people reading it)."""
        names = x509.SubjectAlternativeName(
            [x509.UniformResourceIdentifier("urn:sandbox-orch:node")]
        )
        return self._issue(f"node {node}"[:64], names, ExtendedKeyUsageOID.CLIENT_AUTH)

    def _issue(
        self, common_name: str, names: x509.SubjectAlternativeName, purpose: x509.ObjectIdentifier
    ) -> Credential:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            self._builder(_name(common_name), key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage("digital_signature"), critical=True)
            .add_extension(names, critical=False)
            .add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        key_pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        der = cert.public_bytes(Encoding.DER)
        return Credential(cert.public_bytes(Encoding.PEM), key_pem, fingerprint(der))

    def _builder(
        self, subject: x509.Name, public_key: ec.EllipticCurvePublicKey
    ) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - SKEW)
            .not_valid_after(now + VALIDITY)
        )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _usage(*granted: str) -> x509.KeyUsage:
    """Only the uses `granted`: signing certificates (the CA), or TLS (the others)."""
    return x509.KeyUsage(**{name: name in granted for name in KEY_USAGES})
