"""Random overrides, as a user might type them: composing and planning either succeeds or stops
with a clear error (Hydra's composition error or ours), never with an unexpected exception."""
import math

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hydra.errors import HydraException

from tests.helpers import make_config
from runner.commands.lcm_run import check_group_choices
from runner.errors import UserError
from runner.config.job_plan import plan_job

KEYS = ["sampling.steps", "sampling.guidance_scale", "sampling.height", "sampling.width", "sampling.num_images",
        "sampling.seed", "sampling.prompt", "sampling.negative_prompt", "lora.lcm.weight", "lora_scale",
        "fuse_lora", "device.type", "device.dtype", "scheduler", "model", "lora", "conditioning", "zoo",
        "experiment", "conditioning.conditioning_scale", "conditioning.strength", "model.source",
        "lora.lcm.source", "on_invalid", "plan", "scheduler._target_", "sampling.stepz", "+scheduler.eta"]

values = st.one_of(
    st.integers(min_value=-10**6, max_value=10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.sampled_from(["none", "lcm", "tiny", "hub", "inpaint", "t2i", "controlnet_canny", "cpu", "null", "auto"]),
    st.text(min_size=0, max_size=20),
)


def as_override(key, value):
    if isinstance(value, float) and not math.isfinite(value):
        value = "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    elif isinstance(value, str) and not value.isidentifier():
        value = "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return f"{key}={value}"


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(KEYS), values), min_size=1, max_size=4))
@example(pairs=[("scheduler", "\x00")])  # found by this test: a NUL byte crashed Hydra's config lookup
def test_random_overrides_plan_or_fail_clearly(tiny_zoo, pairs):
    overrides = ["zoo=tiny"] + [as_override(k, v) for k, v in pairs]
    try:
        check_group_choices(overrides)  # what lcm-run checks before Hydra composes
        plan_job(make_config(*overrides))
    except (UserError, HydraException) as error:
        assert str(error).strip(), "an error must say what is wrong"
