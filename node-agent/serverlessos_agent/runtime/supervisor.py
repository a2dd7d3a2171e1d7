"""The supervisor: the runtime's parts, built together and handed out.

Composition only; every rule lives in the part that is named for it:

- `table` (process_table.py): the records and their runtime companions;
- `lifecycle` (lifecycle.py): start, exits and restarts, stop;
- `resources` and `leases` (limits.py): UpdateResources and lease expiry;
- `adoption` (adoption.py): what a previous agent left;
- `freezer` (freezing.py): freeze and resume for a migration;
- `launcher` (launcher.py): runs, and each process's sandbox layout.

The servicer, the migration parts and the daemon are given the parts they use,
not the supervisor.
"""

from __future__ import annotations

from collections.abc import Callable

from ..cgroup import CgroupDriver
from ..storage.event_journal import EventJournal
from ..storage.record_store import RecordStore
from .adoption import Adoption
from .freezing import Freezer
from .launcher import Launcher, SandboxConfig
from .lifecycle import Lifecycle, LifecycleConfig
from .limits import Leases, Limits, ResourceUpdates
from .process_table import ProcessTable
from .spawner import Spawner
from .validation import NodeCapacity


class Supervisor:
    def __init__(
        self,
        config: LifecycleConfig,
        driver: CgroupDriver,
        *,
        store: RecordStore,
        journal: EventJournal,
        spawner: Spawner,
        capacity: Callable[[], NodeCapacity],
        privilege_problems: list[str] | None = None,
        sandbox: SandboxConfig | None = None,
    ) -> None:
        self.table = ProcessTable(store, journal)
        self.launcher = launcher = Launcher(driver, spawner, store, sandbox)
        limits = Limits(driver)
        self.leases = Leases(self.table, limits)
        self.resources = ResourceUpdates(self.table, limits, self.leases, capacity)
        self.lifecycle = Lifecycle(
            config,
            self.table,
            store,
            launcher=launcher,
            leases=self.leases,
            driver=driver,
            capacity=capacity,
            privilege_problems=privilege_problems or [],
        )
        self.adoption = Adoption(
            self.table,
            store,
            launcher=launcher,
            lifecycle=self.lifecycle,
            leases=self.leases,
            driver=driver,
        )
        self.freezer = Freezer(self.table, driver)

    def close(self) -> None:
        """Let go of everything without touching the processes: they keep running."""
        self.table.close()
