"""Egress by domain (issue 13, item 3): how grants are written, checked and normalised,
what a suffix grant matches (and must not), what admission takes as covered, and which
addresses a private-name opt-in opens. Pure: no sockets, no engine."""

from __future__ import annotations

import pytest

from sandbox_orch.egress.grants import (
    Grant,
    GrantError,
    grant_problem,
    is_public_suffix,
    normalise_host,
    private_allowed,
    private_name_problem,
    uncovered,
)

GHUC = Grant.of("*.githubusercontent.com:443")

# --- writing a grant ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "grant"),
    [
        ("api.example.com:443", Grant("api.example.com", 443)),
        ("API.Example.COM.:443", Grant("api.example.com", 443)),  # case, one trailing dot
        ("*.githubusercontent.com:443", Grant("githubusercontent.com", 443, suffix=True)),
        ("*.GitHubUserContent.com.:443", Grant("githubusercontent.com", 443, suffix=True)),
        ("bücher.example:443", Grant("xn--bcher-kva.example", 443)),  # IDNA: A-labels
        ("xn--bcher-kva.example:443", Grant("xn--bcher-kva.example", 443)),
        ("*.Bücher.example:443", Grant("xn--bcher-kva.example", 443, suffix=True)),
        ("faß.de:443", Grant("xn--fa-hia.de", 443)),  # UTS 46 non-transitional: not "fass"
        ("1.2.3.4:80", Grant("1.2.3.4", 80)),
        ("[2001:DB8:0::1]:443", Grant("2001:db8::1", 443)),  # canonical IPv6
        ("127.1:80", Grant("127.1", 80)),  # not an IP literal to Python: a name (SO107)
        ("a.example:1", Grant("a.example", 1)),
        ("a.example:65535", Grant("a.example", 65535)),
    ],
)
def test_grants_are_normalised_as_written(text, grant):
    assert Grant.of(text) == grant


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("*:443", "'*:443' would grant every host: name the hosts, or a domain suffix such "
         "as *.example.com:443"),
        ("*.com:443", "'*.com:443' would match every domain registered under the public "
         "suffix com: grant hosts, or a suffix of a domain you own"),
        ("*.co.uk:443", "'*.co.uk:443' would match every domain registered under the public "
         "suffix co.uk: grant hosts, or a suffix of a domain you own"),
        ("*.COM.:443", "'*.COM.:443' would match every domain registered under the public "
         "suffix com: grant hosts, or a suffix of a domain you own"),
        ("api.*:443", "'api.*:443': `*` may only be the whole first label (*.example.com)"),
        ("*example.com:443",
         "'*example.com:443': `*` may only be the whole first label (*.example.com)"),
        ("*.*.example.com:443",
         "'*.*.example.com:443': `*` may only be the whole first label (*.example.com)"),
        ("*.10.0.0.1:80", "'*.10.0.0.1:80': a wildcard cannot apply to an IP address"),
        ("*.0.1:80", "'*.0.1:80': a wildcard cannot apply to an IP address"),
        ("*.1.2.3:80", "'*.1.2.3:80': a wildcard cannot apply to an IP address"),
        ("*.b.a.1:80", "'*.b.a.1:80': a wildcard cannot apply to an IP address"),
        ("*.::1:80", "'*.::1:80': a wildcard cannot apply to an IP address"),
        ("[::1:443", "'[::1:443' is not HOST:PORT (or *.DOMAIN:PORT; IPv6: [ADDRESS]:PORT)"),
        ("::1]:443", "'::1]:443' is not HOST:PORT (or *.DOMAIN:PORT; IPv6: [ADDRESS]:PORT)"),
        ("*.[::1]:80", "'*.[::1]:80': [...] holds one IPv6 address, never a wildcard"),
        ("[a.example]:80", "'[a.example]:80': [...] holds one IPv6 address, never a wildcard"),
        ("[1.2.3.4]:80", "'[1.2.3.4]:80': [...] holds one IPv6 address, never a wildcard"),
        ("a.example:0", "'a.example:0': port '0' is not a port (1-65535)"),
        ("a.example:65536", "'a.example:65536': port '65536' is not a port (1-65535)"),
        ("a.example:+1", "'a.example:+1': port '+1' is not a port (1-65535)"),
        ("a.example:", "'a.example:': port '' is not a port (1-65535)"),
        ("a.example", "'a.example' is not HOST:PORT (or *.DOMAIN:PORT)"),
        (":443", "':443' is not HOST:PORT (or *.DOMAIN:PORT)"),
        ("::1:443", "'::1:443' is not HOST:PORT (or *.DOMAIN:PORT; IPv6: [ADDRESS]:PORT)"),
        ("a/b:443", "'a/b:443' is not HOST:PORT (or *.DOMAIN:PORT; IPv6: [ADDRESS]:PORT)"),
        ("a b:443", "'a b:443' is not HOST:PORT (or *.DOMAIN:PORT; IPv6: [ADDRESS]:PORT)"),
        ("a_b.example:443", "'a_b.example' is not a valid host name (IDNA: Codepoint U+005F "
         "at position 2 of 'a_b' not allowed)"),
        ("a..example:443", "'a..example' is not a valid host name (IDNA: Empty Label)"),
        ("xn--zz.example:443", "'xn--zz.example' is not a valid host name (IDNA: Invalid "
         "A-label)"),
    ],
)  # fmt: skip
def test_nonsense_grants_are_refused_saying_why(text, message):
    with pytest.raises(GrantError) as refused:
        Grant.of(text)
    assert str(refused.value) == message
    assert isinstance(refused.value, ValueError)  # pydantic and the schema read it so


def test_a_grant_prints_as_it_is_matched():
    assert str(Grant.of("*.Bücher.example.:443")) == "*.xn--bcher-kva.example:443"
    assert str(Grant.of("[::1]:80")) == "[::1]:80"
    assert str(Grant.of("a.example:8080")) == "a.example:8080"


def test_public_suffixes_come_from_the_icann_section_only():
    assert is_public_suffix("com") and is_public_suffix("co.uk")
    assert is_public_suffix("unknowntld")  # an unlisted top-level label counts as one
    # Shared hosting domains are registrable (the policy review rates them instead).
    assert not is_public_suffix("githubusercontent.com")
    assert not is_public_suffix("example.com")


# --- the spelling names are matched in -----------------------------------------------------


@pytest.mark.parametrize(
    ("asked", "name"),
    [
        ("RAW.GitHubUserContent.com", "raw.githubusercontent.com"),
        ("raw.githubusercontent.com.", "raw.githubusercontent.com"),
        ("Bücher.example", "xn--bcher-kva.example"),
        ("XN--BCHER-KVA.example", "xn--bcher-kva.example"),
        ("2001:DB8::1", "2001:db8::1"),
        ("10.0.0.1", "10.0.0.1"),
    ],
)
def test_names_are_normalised_before_matching(asked, name):
    assert normalise_host(asked) == name


@pytest.mark.parametrize("asked", ["a..b", "a.b..", "", "-a.example", "*.example.com", "a_b.c"])
def test_names_that_are_not_idna_are_refused(asked):
    with pytest.raises(GrantError, match=r"is not a valid host name \(IDNA: "):
        normalise_host(asked)


# --- matching: a client's target against a node's grants ----------------------------------


def target(text: str) -> Grant:
    return Grant.parse(text).normalised()


@pytest.mark.parametrize(
    "asked",
    [
        "raw.githubusercontent.com:443",
        "a.b.githubusercontent.com:443",  # deeper names match too
        "RAW.GITHUBUSERCONTENT.COM:443",
        "raw.githubusercontent.com.:443",
        "objects.githubusercontent.com:443",
    ],
)
def test_a_suffix_grant_matches_names_below_it(asked):
    assert GHUC.matches(target(asked))


@pytest.mark.parametrize(
    "asked",
    [
        "evilgithubusercontent.com:443",  # a different registrable domain
        "githubusercontent.com:443",  # the apex: strictly below only
        "raw.githubusercontent.com:80",  # another port
        "raw.githubusercontent.com.evil.example:443",
        "githubusercontent.com.evil.example:443",
        "xgithubusercontent.com:443",
    ],
)
def test_a_suffix_grant_matches_nothing_else(asked):
    assert not GHUC.matches(target(asked))


def test_unicode_and_punycode_spellings_are_one_name():
    grant = Grant.of("*.bücher.example:443")
    assert grant.matches(target("shop.xn--bcher-kva.example:443"))
    assert grant.matches(Grant("shop.BÜCHER.example", 443).normalised())
    assert Grant.of("bücher.example:443").matches(target("XN--BCHER-KVA.EXAMPLE.:443"))
    assert not grant.matches(target("shop.bucher.example:443"))


def test_an_exact_grant_matches_its_host_and_port_only():
    grant = Grant.of("api.example.com:443")
    assert grant.matches(target("API.example.com.:443"))
    assert not grant.matches(target("api.example.com:8443"))
    assert not grant.matches(target("x.api.example.com:443"))
    assert not grant.matches(target("example.com:443"))


# --- admission: what a policy grant covers ----------------------------------------------


@pytest.mark.parametrize(
    ("policy", "node", "covered"),
    [
        ("*.example.com:443", "api.example.com:443", True),
        ("*.example.com:443", "a.b.example.com:443", True),
        ("*.example.com:443", "*.example.com:443", True),  # an equal suffix
        ("*.example.com:443", "*.pkg.example.com:443", True),  # a narrower suffix
        ("*.example.com:443", "*.EXAMPLE.com.:443", True),
        ("*.example.com:443", "example.com:443", False),  # the apex
        ("*.example.com:443", "api.example.com:80", False),
        ("*.example.com:443", "*.pkg.example.com:80", False),
        ("*.pkg.example.com:443", "*.example.com:443", False),  # a wider suffix
        ("*.example.com:443", "*.evilexample.com:443", False),
        ("api.example.com:443", "*.example.com:443", False),
        ("api.example.com:443", "*.api.example.com:443", False),  # exact never covers a suffix
        ("api.example.com:443", "API.Example.com.:443", True),
        ("bücher.example:443", "xn--bcher-kva.example:443", True),
    ],
)
def test_a_policy_grant_covers(policy, node, covered):
    assert Grant.of(policy).covers(Grant.of(node)) is covered
    assert uncovered([node], [policy]) == ([] if covered else [node])


def test_uncovered_lists_what_no_grant_covers_as_written_and_in_order():
    policy = ["*.example.com:443", "api.other.example:443"]
    asked = ["b.example.com:443", "x.other.example:443", "a_b.example.com:443", "*:443"]
    assert uncovered(asked, policy) == ["x.other.example:443", "a_b.example.com:443", "*:443"]
    assert uncovered([], policy) == []
    assert uncovered(["a.example.com:443"], []) == ["a.example.com:443"]


# --- the private-name opt-in -------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("10.1.2.3", True),
        ("172.16.0.1", True),
        ("192.168.1.1", True),
        ("fd00::1", True),
        ("127.0.0.1", True),  # a mirror on the host itself
        ("::1", True),
        ("::ffff:10.0.0.1", True),
        ("169.254.169.254", False),  # cloud metadata: link-local
        ("::ffff:169.254.169.254", False),
        ("fe80::1", False),
        ("0.0.0.0", False),
        ("240.0.0.1", False),  # reserved
        ("224.0.0.1", False),  # multicast
        ("100.100.100.200", False),  # shared address space (a metadata service lives here)
        ("93.184.216.34", False),  # public: routable() allows it, not this
    ],
)
def test_private_allowed(address, allowed):
    assert private_allowed(address) is allowed


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("mirror.corp.example:443", None),
        ("pkg.build.example:443", None),  # granted by a suffix
        ("Mirror.Corp.Example.:443", None),
        ("*.build.example:443", "'*.build.example:443': a private name is one exact host, "
         "never a suffix"),
        ("10.0.0.1:443", "'10.0.0.1:443': an IP literal grant is taken as meant; no opt-in "
         "is needed"),
        ("other.corp.example:443", "'other.corp.example:443' is not granted by network.egress"),
        ("mirror.corp.example:80", "'mirror.corp.example:80' is not granted by network.egress"),
        ("mirror:99999", "'mirror:99999': port '99999' is not a port (1-65535)"),
    ],
)  # fmt: skip
def test_private_name_problem(entry, problem):
    egress = ["mirror.corp.example:443", "*.build.example:443", "10.0.0.1:443"]
    assert private_name_problem(entry, egress) == problem


def test_grant_problem_says_why_or_nothing():
    assert grant_problem("a.example:443") is None
    assert grant_problem("*.example.com:443") is None
    assert grant_problem("*:443") == (
        "'*:443' would grant every host: name the hosts, or a domain suffix such as "
        "*.example.com:443"
    )
