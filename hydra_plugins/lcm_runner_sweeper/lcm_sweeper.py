"""Where Hydra discovers lcm-runner's sweeper (`hydra/sweeper=lcm`). Hydra takes a plugin only from a
class defined in the hydra_plugins package; the sweeper itself is runner.sweep.sweeper, beside the
rest of the code that touches Hydra."""
from runner.sweep import sweeper


class LcmSweeper(sweeper.LcmSweeper):
    """runner.sweep.sweeper.LcmSweeper, under the name Hydra looks for."""
