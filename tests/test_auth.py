"""Push signatures: txSecret = md5(key + StreamName + txTime), txTime as written."""

from __future__ import annotations

import hashlib

from app.auth import BAD_AUTH, PushKeys, check_push, push_secret, sign_push

NOW = 1_700_000_000
KEYS = PushKeys(primary="primary-key", backup="backup-key")


def test_secret_is_md5_of_key_name_and_time_as_written() -> None:
    # Worked by hand: the documented formula, nothing else.
    expected = hashlib.md5(b"primary-keystream16553F00").hexdigest()
    assert push_secret("primary-key", "stream1", "6553F00") == expected


def test_signed_push_is_accepted_with_either_key() -> None:
    for key in ("primary-key", "backup-key"):
        query = sign_push(key, "cam", NOW + 60)
        verdict = check_push("cam", query, KEYS, NOW)
        assert verdict.ok, verdict.reason
        assert verdict.status_code is None


def test_tx_time_is_upper_case_hex_of_the_expiry() -> None:
    query = sign_push("k", "s", 0x6553F100)
    assert query["txTime"] == "6553F100"


def test_tx_time_hashed_exactly_as_written() -> None:
    # Lower-case hex is the same instant but a different string, so a different secret.
    upper = sign_push("primary-key", "cam", NOW + 60)
    lower = {"txTime": upper["txTime"].lower(), "txSecret": upper["txSecret"]}
    assert not check_push("cam", lower, KEYS, NOW).ok
    lower["txSecret"] = push_secret("primary-key", "cam", lower["txTime"])
    assert check_push("cam", lower, KEYS, NOW).ok


def test_secret_case_does_not_matter() -> None:
    query = sign_push("primary-key", "cam", NOW + 60)
    query["txSecret"] = query["txSecret"].upper()
    assert check_push("cam", query, KEYS, NOW).ok


def test_expired_push_is_refused() -> None:
    query = sign_push("primary-key", "cam", NOW - 1)
    verdict = check_push("cam", query, KEYS, NOW)
    assert not verdict.ok and verdict.status_code == BAD_AUTH
    assert "expired" in verdict.reason
    assert check_push("cam", query, KEYS, NOW - 1).ok  # the expiry second itself is still fine


def test_wrong_key_or_other_stream_name_is_refused() -> None:
    assert not check_push("cam", sign_push("other", "cam", NOW + 60), KEYS, NOW).ok
    assert not check_push("cam2", sign_push("primary-key", "cam", NOW + 60), KEYS, NOW).ok


def test_missing_or_malformed_parameters() -> None:
    good = sign_push("primary-key", "cam", NOW + 60)
    cases = [
        {},
        {"txSecret": good["txSecret"]},
        {"txTime": good["txTime"]},
        {**good, "txTime": "0x" + good["txTime"]},
        {**good, "txTime": "12_34"},
        {**good, "txTime": " " + good["txTime"]},
        {**good, "txTime": "F" * 17},
        {**good, "txTime": "zz"},
        {**good, "txSecret": "é" * 32},  # non-ASCII must not crash the compare
    ]
    for query in cases:
        verdict = check_push("cam", query, KEYS, NOW)
        assert not verdict.ok, query
        assert verdict.status_code == BAD_AUTH


def test_no_key_means_auth_off() -> None:
    verdict = check_push("cam", {}, PushKeys(), NOW)
    assert verdict.ok and "off" in verdict.reason


def test_backup_key_alone_turns_auth_on() -> None:
    keys = PushKeys(backup="b")
    assert not check_push("cam", {}, keys, NOW).ok
    assert check_push("cam", sign_push("b", "cam", NOW + 5), keys, NOW).ok
    assert not check_push("cam", sign_push("", "cam", NOW + 5), keys, NOW).ok


def test_expiry_beyond_the_horizon_is_refused_saying_tx_time_is_hex() -> None:
    # A signer's mistake: the expiry written in decimal reads, as hex, centuries ahead.
    decimal = str(NOW - 365 * 24 * 3600)
    query = {"txTime": decimal, "txSecret": push_secret("primary-key", "cam", decimal)}
    verdict = check_push("cam", query, KEYS, NOW)
    assert not verdict.ok and verdict.status_code == BAD_AUTH
    assert "hexadecimal" in verdict.reason and "horizon" in verdict.reason
    # Within the horizon it is fine; the horizon is the caller's to set.
    week = sign_push("primary-key", "cam", NOW + 6 * 24 * 3600)
    assert check_push("cam", week, KEYS, NOW).ok
    assert not check_push("cam", week, KEYS, NOW, max_ttl=3600).ok
    # A wrong signature is told as such, whatever its txTime says.
    forged = {"txTime": decimal, "txSecret": "0" * 32}
    assert "does not match" in check_push("cam", forged, KEYS, NOW).reason
