"""Jobs that differ only in seed or prompt, generated in one batched pipeline call.

The sweeper sees the whole grid: it groups jobs whose configs are equal but for `sampling.seed`,
`sampling.prompt` and `sampling.negative_prompt`, runs them one after another, and registers each
group here. The group's first job to run (its leader) generates every image of the group in one call —
one generator per image, exactly as each job would seed them alone — and leaves the others' images
here; each following job of the group takes its own and records which call made them. A resumed
sweep makes the same calls (a finished leader steps down and the next member makes the group's
call), so its pixels equal an uninterrupted sweep's. On out of memory the leader falls back to
generating alone.
"""
from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from omegaconf import DictConfig

from runner.config.schema import NOT_IDENTITY, plain_value
from runner.sweep.handoff import HANDOFF

BATCHABLE = ("seed", "prompt", "negative_prompt")  # the sampling keys a batch may vary


@dataclass
class Ready:
    images: Any  # this job's images (floats, as output_type="np")
    info: Dict[str, Any]  # what run.json says about the call that made them


def batch_key(cfg: DictConfig) -> str:
    """Equal for jobs that may share one pipeline call."""
    # prompt text only; `outputs` counts: jobs that differ only in how their images are stored are
    # the same job (one identity), which one call cannot hold twice
    values = {key: plain_value(cfg[key]) for key in cfg
              if key not in (*NOT_IDENTITY, "prompt", "vars") or key == "outputs"}
    for key in BATCHABLE:
        values["sampling"].pop(key, None)
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()


def group(configs: Sequence[DictConfig], order: Sequence[int], max_images: int) -> List[List[int]]:
    """Consecutive runs of `order` that may share a call, each within `max_images` images."""
    groups: List[List[int]] = []
    key, images = None, 0
    for index in order:
        cfg = configs[index]
        this_key, count = batch_key(cfg), int(cfg.sampling.num_images)
        if groups and this_key == key and images + count <= max_images:
            groups[-1].append(index)
            images += count
        else:
            groups.append([index])
            key, images = this_key, count
    return groups


def expect(configs: Sequence[DictConfig], leader: int = 0) -> None:
    """Register a group about to run, in the order of its call; `configs[leader]` makes the call (the
    first, in a sweep)."""
    if len(configs) > 1:
        HANDOFF.batches[HANDOFF.identity_of(configs[leader])] = list(configs)


def call_values(cfg: DictConfig) -> Dict[str, Any]:
    """What the jobs of one call may differ in: each member's entry in run.json's `batch.members`."""
    return {key: plain_value(cfg.sampling[key]) for key in BATCHABLE}


def configs_of_call(cfg: DictConfig, members: Sequence[Dict[str, Any]]) -> Optional[Tuple[List[DictConfig], int]]:
    """The configs of a recorded call's jobs, made from `cfg` with each member's values (in the call's
    order), and `cfg`'s place among them; None when `cfg` is none of them."""
    mine = call_values(cfg)
    if mine not in members:
        return None
    configs = []
    for values in members:
        member = copy.deepcopy(cfg)
        for key in BATCHABLE:
            member.sampling[key] = values[key]
        configs.append(member)
    return configs, list(members).index(mine)


def members_led_by(identity: str) -> Optional[List[DictConfig]]:
    return HANDOFF.batches.pop(identity, None)


def step_down(identity: str) -> None:
    """A leader with nothing to do (its results were already complete: resume) hands the whole group
    to the next member, so that the group's call, and so its float rounding, stays the same."""
    group = HANDOFF.batches.pop(identity, None)
    if group is None:
        return
    identities = [HANDOFF.identity_of(cfg) for cfg in group]
    following = identities[identities.index(identity) + 1:]
    if following:
        HANDOFF.batches[following[0]] = group


def put_ready(identity: str, ready: Ready) -> None:
    HANDOFF.ready[identity] = ready


def take_ready(identity: str) -> Optional[Ready]:
    return HANDOFF.ready.pop(identity, None)

