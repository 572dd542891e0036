"""Jobs on the machines of a directory: `kcloud job submit|list|status|logs|fetch|cancel`.

A job is a directory synced to every target node with rsync, a setup run once per node, and a
command started detached from the SSH session (its own session and process group), so it
survives a dropped connection, a closed laptop and the submitting process. Everything of a job
on a node lives under `~/.kcloud/jobs/<id>/` (the node's HOME):

    env.sh run.sh command.sh [setup.sh]    written by submit (values quoted for the shell)
    work/                                  the synced directory; the command runs here
    pid                                    the runner's pid = the job's process group
    phase started ended exit_code          what the runner reached (atomic files)
    setup_exit setup.log output.log        the setup's and the command's output
    cancelled                              written by `job cancel` before it kills

On this computer a job is a record, `.kcloud/jobs/<id>.json` (records.py), written before the
first remote side effect and updated atomically; the last known status is kept in it, so `job
status` and `job logs` still answer after the machines are gone. `--then destroy` (and
CONFIG_KCLOUD_DESTROY_AFTER_JOB) is carried out by the directory's watchdog (after.py, called
from kcloud.launch.watchdog): when the job ends it fetches the artifacts, then destroys.

Modules: records (ids, local records), nodes (the directory's nodes, ssh and rsync argv),
remote (the shell scripts run on a node and the parsing of their answers), commands (the CLI),
after (--then destroy).
"""
