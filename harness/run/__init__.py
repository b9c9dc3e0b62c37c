"""One run: a cell (detector × loss) with a seed, trained and evaluated in its work folder, ending in a row.

* :mod:`harness.run.job`: :class:`~harness.run.job.RunJob`, the submitit callable: lock, resume,
  preemption, the result row (``done`` or ``failed`` with the reason) and its provenance;
* :mod:`harness.run.train`: binds the cell's config to the run's data, schedule and seed, trains with
  mmengine (checkpoints, resume, distributed), evaluates;
* :mod:`harness.run.fingerprint`: what decides a run's result beyond its spec (config, code, loss
  modules, versions), recorded in its row and compared with what the current code builds (``stale``);
* :mod:`harness.run.hardware`: what computed a run (processor and vector level, GPU), in its row: the
  same code can give other last bits, hence other runs, on other hardware;
* :mod:`harness.run.hooks`: the mmengine hooks a run adds (NaN guard, loss curve, RNG state), the
  evaluation metric and the CPU-capable distributed wrapper.

Rows are written with :mod:`harness.rows`; nothing here imports :mod:`harness.launch` or
:mod:`harness.results`.
"""
