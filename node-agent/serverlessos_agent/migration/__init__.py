"""Live migration, the agent's part: checkpoint and send (source.py), receive and
restore (target.py), and finish (commit or roll back) on either side (finish.py).

The operator sequences the steps (see the operator's migrator.py); each step
here is safe on its own:
- The source freezes the process with CRIU and leaves it *stopped*, never
  killed (leave_stopped), so a rollback only has to continue it. If anything
  fails before the target holds the checkpoint, the source resumes the process
  itself before reporting the error.
- The target restores only when told to, once, from a checkpoint it received
  completely (every file's checksum checked).
- Finishing is idempotent: a commit removes the frozen original (after a
  post-copy's memory has been pulled), a rollback continues it on the source
  and discards the target's copy.

Paths: CRIU restores open files and the working directory at the paths they had
on the source, so agents must use the same --state-dir path on every node (the
DaemonSet's hostPath; the local cluster bind-mounts each node's directory at one
path in a mount namespace per node).

On disk, per migration: <state>/migrations/<id>/ with meta.json (what it is and
how far it got), images/ (CRIU's checkpoint), and, on the target until the
restore, work/ and logs/ (directory.py). CRIU itself: ../runtime/criu.py; the checkpoint
stream between agents: transfer.py.
"""
