"""Where and how runs execute: a spec's runs placed on an executor, and their state.

* :mod:`harness.launch.orchestrate`: the one run path of ``harness run`` and ``harness benchmark``;
* :mod:`harness.launch.dispatch`: the plan (what is done, what to run), SLURM job arrays, the local pool;
* :mod:`harness.launch.manifest`: the record of submissions (``results/<experiment>/manifest.json``);
* :mod:`harness.launch.status`: every run's state (rows, manifest, locks, the SLURM queue);
* :mod:`harness.launch.cluster`: cluster profiles and the loopback SLURM test cluster.

A placed run is a :class:`harness.run.job.RunJob` (the run package trains and evaluates it and writes
its row). Importing these modules loads no torch or mmdet: that is the job's business.
"""
