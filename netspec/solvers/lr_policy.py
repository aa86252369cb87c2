"""Learning-rate policies: Caffe's formulas, one small pure function each.

Each takes the SolverParameter, the iteration, and the multistep position; multistep returns
its advanced position too (it is kept in the .solverstate as current_step)."""
from __future__ import annotations

import math

from ..errors import NetspecError


def fixed(p, it, step):
    return p.base_lr, step


def step_(p, it, step):
    return p.base_lr * p.gamma ** (it // p.stepsize), step


def exp(p, it, step):
    return p.base_lr * p.gamma ** it, step


def inv(p, it, step):
    return p.base_lr * (1.0 + p.gamma * it) ** (-p.power), step


def multistep(p, it, step):
    while step < len(p.stepvalue) and it >= p.stepvalue[step]:
        step += 1
    return p.base_lr * p.gamma ** step, step


def poly(p, it, step):
    return p.base_lr * (1.0 - it / p.max_iter) ** p.power, step


def sigmoid(p, it, step):
    return p.base_lr / (1.0 + math.exp(min(-p.gamma * (it - p.stepsize), 700.0))), step


POLICIES = {"fixed": fixed, "step": step_, "exp": exp, "inv": inv, "multistep": multistep,
            "poly": poly, "sigmoid": sigmoid}


def learning_rate(p, it: int, current_step: int) -> tuple[float, int]:
    """(rate at iteration `it`, new multistep position); a rate that overflows is an error."""
    try:
        rate, step = POLICIES[p.lr_policy](p, it, current_step)
    except (OverflowError, ZeroDivisionError):
        rate, step = math.inf, current_step
    if not math.isfinite(rate):
        raise NetspecError(f"lr_policy '{p.lr_policy}' gives no finite learning rate at "
                           f"iteration {it} (base_lr {p.base_lr:g}, gamma {p.gamma:g}, power "
                           f"{p.power:g})")
    return rate, step
