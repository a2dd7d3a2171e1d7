"""CRIU detection (published in ServerlessNode capabilities), with the real CRIU 4
that hack/install-criu.sh installs (Debian forky's, through a private prefix)."""

from __future__ import annotations

from serverlessos_agent.runtime.criu import detect


def test_real_criu_is_detected_with_its_features(criu: str) -> None:
    info = detect(criu)
    assert info is not None
    assert int(info.version.split(".")[0]) >= 4
    assert info.usable, info.problem
    # PLATFORM.md: lazy pages (userfaultfd) work here; soft-dirty tracking is not in this kernel.
    assert "lazy-pages" in info.features
    assert "dirty-tracking" not in info.features
