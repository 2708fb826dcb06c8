"""``--jobs N``: experiments made of independent runs give the same results in worker processes."""

from __future__ import annotations

import pytest

from npnorm.experiments import gan
from npnorm.experiments.__main__ import main
from npnorm.experiments._framework import progress_map, to_jsonable, worker_processes


def _without_times(obj):
    """The results minus wall-clock measurements (the only part that may differ between runs)."""
    if isinstance(obj, dict):
        return {k: _without_times(v) for k, v in obj.items() if k != "ms_per_critic_step"}
    if isinstance(obj, list):
        return [_without_times(v) for v in obj]
    return obj


def test_gan_runs_in_two_processes_equal_one_process():
    kwargs = dict(quick=True, seed=4, datasets=("ring",), n_seeds=1, runs=gan.RUNS[1:3])
    with worker_processes(1):
        one = to_jsonable(gan.gan_lipschitz(**kwargs))
    with worker_processes(2):
        two = to_jsonable(gan.gan_lipschitz(**kwargs))
    assert one["snapshots"] and one["history"]["ring"]
    assert _without_times(two) == _without_times(one)


def test_progress_map_keeps_job_order():
    jobs = [((v,), {}) for v in (3.0, -1.0, 2.0, 0.5)]
    with worker_processes(2):
        assert progress_map(abs, jobs, "abs") == [3.0, 1.0, 2.0, 0.5]


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_worker_processes_rejects_non_positive_integers(bad):
    with pytest.raises(ValueError, match="positive integer"):
        with worker_processes(bad):
            pass


def test_command_rejects_jobs_below_one(capsys):
    with pytest.raises(SystemExit):
        main(["depth-statistics", "--jobs", "0"])
    assert "--jobs must be a positive integer" in capsys.readouterr().err
