"""No result from non-finite numbers: the checks every training loop and every saver share.

A loop calls `check_finite_loss` on each step's loss (before `backward`), so a run that diverges
stops at the first bad step with a `TrainingError` naming it, and the last good checkpoint is
kept; a saver calls `check_finite_state` on what it is about to write, so no file ever holds a
NaN or inf parameter or optimizer moment."""
import math

import numpy as np

from ..errors import TrainingError


def check_finite_loss(loss, step: int, where: str = "training") -> float:
    """-> the loss as a float; raises TrainingError if it is NaN or infinite."""
    value = float(loss.item() if hasattr(loss, "item") else loss)
    if not math.isfinite(value):
        raise TrainingError(f"{where} diverged: the loss at step {step} is {value} (try a lower "
                            "learning rate or weight decay, or check the data and starting weights); "
                            "nothing of this step was saved")
    return value


def non_finite_names(named_arrays) -> list:
    """The names among (name, array) pairs whose floating-point values are not all finite."""
    bad = []
    for name, arr in named_arrays:
        arr = np.asarray(getattr(arr, "data", arr))
        if arr.dtype.kind != "f" or not arr.size:
            continue
        # a float64 sum of float32 values cannot overflow: it is finite iff they all are (one pass,
        # no boolean temporary the size of the array)
        finite = (math.isfinite(arr.sum(dtype=np.float64)) if arr.dtype.itemsize <= 4
                  else bool(np.isfinite(arr).all()))
        if not finite:
            bad.append(name)
    return bad


def check_finite_state(named_arrays, what: str) -> None:
    """Raises TrainingError naming the first tensors of `what` that hold NaN or inf."""
    bad = non_finite_names(named_arrays)
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise TrainingError(f"{what} holds non-finite values ({shown}); refusing to use or save it")
