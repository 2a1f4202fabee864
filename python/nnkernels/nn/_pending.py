"""Helper for layers whose ops are not in this build yet."""

from .. import ops


def require_op(layer, *names):
    missing = [n for n in names if not hasattr(ops, n)]
    if missing:
        raise NotImplementedError(f"{layer} needs nnkernels.ops.{', '.join(missing)}, which this build "
                                  "does not have yet")
