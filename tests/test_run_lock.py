"""A run's lock (``work/<run_id>/lock``): looking at it never makes a starting run step aside.

``held_elsewhere`` (``harness status``, the plan, ``run --wait`` every 2 s) takes a shared ``flock`` for an
instant; a rank 0 acquiring in that instant must not conclude that another process runs the run."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from harness.run.job import RunLock

REPO = Path(__file__).resolve().parents[1]

# Looks at the lock as fast as it can until the stop file appears; prints how many looks said "held".
HAMMER = """
import sys
from pathlib import Path
from harness.run.job import RunLock
folder, stop = Path(sys.argv[1]), Path(sys.argv[2])
lock = RunLock(folder)
held = looks = 0
print("ready", flush=True)
while not stop.exists():
    for _ in range(200):
        held += lock.held_elsewhere()
        looks += 1
print(held, looks, flush=True)
"""


def test_a_status_check_hammering_the_lock_never_refuses_an_acquirer(tmp_path):
    folder, stop = tmp_path / "work" / "r1", tmp_path / "stop"
    folder.mkdir(parents=True)
    (folder / "lock").touch()
    lock = RunLock(folder)
    hammer = subprocess.Popen([sys.executable, "-c", HAMMER, str(folder), str(stop)], stdout=subprocess.PIPE,
                              text=True, cwd=REPO)
    try:
        assert hammer.stdout.readline().strip() == "ready"
        refused, started = 0, time.time()
        for _ in range(300):
            if lock.acquire():
                lock.release()
            else:
                refused += 1
        elapsed = time.time() - started
    finally:
        stop.touch()
        held, looks = map(int, hammer.communicate(timeout=30)[0].split())
    assert refused == 0, f"{refused} of 300 acquisitions refused while a status check looked at the lock"
    assert 0 < held < looks  # the looks did see the lock held while this process had it, and free otherwise
    assert elapsed < 60


def test_a_lock_really_held_elsewhere_is_still_refused(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom pathlib import Path\n"
                               "from harness.run.job import RunLock\nassert RunLock(Path(sys.argv[1])).acquire()\n"
                               "print('held', flush=True)\ntime.sleep(60)\n", str(tmp_path)],
                              stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.time()
        assert not RunLock(tmp_path).acquire(retry_s=0.3)
        assert 0.3 <= time.time() - started < 5
        assert RunLock(tmp_path).held_elsewhere()
    finally:
        holder.kill()
        holder.wait()
    assert RunLock(tmp_path).acquire()  # freed when its holder died
