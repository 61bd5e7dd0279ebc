"""Path-dependent TreeSHAP (Lundberg et al. 2018, algorithm 2) over fitted tree arrays.

Pure Python over plain lists, no third-party explainer: the ``shap`` package
reads scikit-learn's ``HistGradientBoosting*`` trees but not their native
categorical splits (the bitsets our model splits categories on), and it drags in
numba/llvmlite.  A tree here is :class:`Tree`: per node its children, the
*player* (input feature) it splits on, its training count and, for leaves, its
value; ``goes_left(node)`` says where the explained row goes at a split.

Players may own several encoded columns (a number and its was-missing
indicator): the caller maps every split to the player whose raw value decides
it, so the Shapley values are those of the game whose players are the raw
features, with ``E[f(x) | x_S]`` estimated by following ``x`` at splits on ``S``
and averaging both children by training count elsewhere ("path-dependent").
Local accuracy holds exactly: ``expected_value + sum(phi) == f(x)`` up to
floating-point rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Tree:
    left: Sequence[int]  # -1 at a leaf
    right: Sequence[int]
    player: Sequence[int]  # the input feature a split is decided by (-1 at a leaf)
    count: Sequence[float]  # training rows through the node ("cover")
    value: Sequence[float]  # the leaf's output (ignored at splits)

    def expected_value(self) -> float:
        """The count-weighted mean leaf value: ``E[f]`` over the training rows."""
        exp = [0.0] * len(self.left)
        for i in range(len(self.left) - 1, -1, -1):  # children come after their parent
            if self.left[i] < 0:
                exp[i] = float(self.value[i])
            else:
                lo, hi = self.left[i], self.right[i]
                n = self.count[lo] + self.count[hi]
                exp[i] = (exp[lo] * self.count[lo] + exp[hi] * self.count[hi]) / n if n > 0 else 0.0
        return exp[0]


def _extend(d: list[int], z: list[float], o: list[float], w: list[float], depth: int,
            pz: float, po: float, pi: int) -> None:
    d[depth], z[depth], o[depth] = pi, pz, po
    w[depth] = 1.0 if depth == 0 else 0.0
    for i in range(depth - 1, -1, -1):
        w[i + 1] += po * w[i] * (i + 1.0) / (depth + 1.0)
        w[i] = pz * w[i] * (depth - i) / (depth + 1.0)


def _unwind(d: list[int], z: list[float], o: list[float], w: list[float], depth: int, k: int) -> None:
    one, zero = o[k], z[k]
    nxt = w[depth]
    for i in range(depth - 1, -1, -1):
        if one != 0.0:
            tmp = w[i]
            w[i] = nxt * (depth + 1.0) / ((i + 1.0) * one)
            nxt = tmp - w[i] * zero * (depth - i) / (depth + 1.0)
        else:
            w[i] = w[i] * (depth + 1.0) / (zero * (depth - i))
    for i in range(k, depth):
        d[i], z[i], o[i] = d[i + 1], z[i + 1], o[i + 1]


def _unwound_sum(z: list[float], o: list[float], w: list[float], depth: int, k: int) -> float:
    one, zero = o[k], z[k]
    nxt = w[depth]
    total = 0.0
    for i in range(depth - 1, -1, -1):
        if one != 0.0:
            tmp = nxt * (depth + 1.0) / ((i + 1.0) * one)
            total += tmp
            nxt = w[i] - tmp * zero * (depth - i) / (depth + 1.0)
        else:
            total += w[i] / zero / ((depth - i) / (depth + 1.0))
    return total


def tree_shap(tree: Tree, goes_left: Callable[[int], bool], phi: list[float]) -> float:
    """Add one tree's SHAP values for one row into ``phi`` (indexed by player); returns the tree's output."""
    size = len(tree.left) + 2

    def recurse(node: int, depth: int, pd: list[int], pz_: list[float], po_: list[float], pw: list[float],
                zero: float, one: float, player: int) -> None:
        d, z, o, w = pd[:], pz_[:], po_[:], pw[:]
        _extend(d, z, o, w, depth, zero, one, player)
        if tree.left[node] < 0:
            v = float(tree.value[node])
            for i in range(1, depth + 1):
                share = _unwound_sum(z, o, w, depth, i)
                phi[d[i]] += share * (o[i] - z[i]) * v
            return
        split = tree.player[node]
        hot, cold = ((tree.left[node], tree.right[node]) if goes_left(node)
                     else (tree.right[node], tree.left[node]))
        cover = tree.count[node]
        in_zero, in_one = 1.0, 1.0
        k = next((i for i in range(depth + 1) if d[i] == split), -1)
        if k >= 0:
            in_zero, in_one = z[k], o[k]
            _unwind(d, z, o, w, depth, k)
            depth -= 1
        recurse(hot, depth + 1, d, z, o, w, tree.count[hot] / cover * in_zero, in_one, split)
        cold_zero = tree.count[cold] / cover * in_zero
        if cold_zero > 0.0:  # a branch no training row took adds nothing
            recurse(cold, depth + 1, d, z, o, w, cold_zero, 0.0, split)

    recurse(0, 0, [0] * size, [0.0] * size, [0.0] * size, [0.0] * size, 1.0, 1.0, -1)
    node = 0
    while tree.left[node] >= 0:
        node = tree.left[node] if goes_left(node) else tree.right[node]
    return float(tree.value[node])


def conditional_expectation(tree: Tree, goes_left: Callable[[int], bool], known: frozenset[int]) -> float:
    """``E[f(x) | x_S]`` the path-dependent way (follow ``x`` at splits on ``known``, else average by count).

    The definition TreeSHAP computes Shapley values of; tests enumerate subsets with it.
    """
    def walk(node: int) -> float:
        if tree.left[node] < 0:
            return float(tree.value[node])
        if tree.player[node] in known:
            return walk(tree.left[node] if goes_left(node) else tree.right[node])
        lo, hi = tree.left[node], tree.right[node]
        n = tree.count[lo] + tree.count[hi]
        if n <= 0:
            return 0.0
        return (walk(lo) * tree.count[lo] + walk(hi) * tree.count[hi]) / n

    return walk(0)
