"""Where and how runs execute: a spec's runs placed on an executor, and their state.

* :mod:`harness.launch.orchestrate`: the one run path of ``harness run`` and ``harness benchmark``;
* :mod:`harness.launch.plan`: what to run (rows, the manifest and the schedulers' queues);
* :mod:`harness.launch.slurm`: the SLURM executor (job arrays through submitit);
* :mod:`harness.launch.local`: the local pool (forked runs, submitit's LocalExecutor) and the debug executor;
* :mod:`harness.launch.wait`: ``--wait``: until the runs placed are no longer queued or running, and their outcomes;
* :mod:`harness.launch.scheduler`: which submitted runs are queued or running (locks, squeue / sacct, local pools);
* :mod:`harness.launch.manifest`: the record of submissions (``results/<experiment>/manifest.json``), under a lock;
* :mod:`harness.launch.status`: every run's state (rows, manifest, locks, the queues);
* :mod:`harness.launch.submission`: the job arrays' submitit / sbatch parameters, checked, and submitted;
* :mod:`harness.launch.cost`: GPU-hours of the arrays (bounded by the time limits, and expected);
* :mod:`harness.launch.rehearse`: ``--rehearse``, every run small on CPU;
* :mod:`harness.launch.cluster`: cluster profiles (and one from ``sinfo``) and the loopback SLURM test cluster.

A placed run is a :class:`harness.run.job.RunJob` (the run package trains and evaluates it and writes
its row). Importing these modules loads no torch or mmdet: that is the job's business.
"""
