"""The golden data carried in ``tests/data/conformance`` is the official golden data, byte for byte.

When the shared golden data from the official implementations is present beside the checkout
(``../shared/conformance``, or ``$GEOVIT_SHARED/conformance``), every file of every family there
must have an identical copy here, so the conformance tests that read the copy test what the
official code produced. Either way every file must match the sha256 and size recorded in
``tests/data/conformance/README.md`` when the copy was made.
"""
from __future__ import annotations

import hashlib
import re

import pytest
from repo_paths import CONFORMANCE, SHARED_CONFORMANCE

FAMILIES = ("channelvit", "chamaevit", "changevit", "vicon", "rate")


def _digests(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _recorded(family):
    """``file -> (bytes, sha256)`` of the README's provenance table for ``family``."""
    rows = re.findall(r"^\| `([^`]+)` \| (\d+) \| `([0-9a-f]{64})` \|$", (CONFORMANCE / "README.md").read_text(), re.M)
    return {name.split("/", 1)[1]: (int(size), sha) for name, size, sha in rows if name.startswith(family + "/")}


@pytest.mark.parametrize("family", FAMILIES)
def test_the_repository_copy_is_the_recorded_and_the_shared_golden_data(family):
    ours, recorded = _digests(CONFORMANCE / family), _recorded(family)
    assert recorded, f"tests/data/conformance/README.md records no files of {family}"
    assert set(ours) == set(recorded), f"{family}: files {sorted(set(ours) ^ set(recorded))} differ from the record"
    for name, (size, sha) in recorded.items():
        assert (CONFORMANCE / family / name).stat().st_size == size and ours[name] == sha, f"{family}/{name}"
    if not (SHARED_CONFORMANCE / family).is_dir():
        return  # a clone without the shared folder: the record above is what the copy is checked against
    official = _digests(SHARED_CONFORMANCE / family)
    assert official, f"{SHARED_CONFORMANCE / family} is empty"
    missing = sorted(set(official) - set(ours))
    differ = sorted(k for k in set(official) & set(ours) if official[k] != ours[k])
    assert not missing and not differ, f"{family}: missing {missing}, different {differ}"
