"""The exit codes of every `loadtest` command, defined once (CI scripts branch on them).

Imported by the commands (parent side) and by the Locust plugin (a Locust process ends with
`EXIT_RUN_FAILED` when its run folder cannot be written), so it imports nothing.
"""

EXIT_OK = 0
#: An SLO failed (or aborted the run), a gated regression; for `capacity`: some region failed
#: its SLOs already at --start.
EXIT_SLO_FAILED = 1
#: Usage or configuration error, refused before any traffic.
EXIT_USAGE = 2
#: The run itself failed (a child did not start, a full disk, Locust crashed).
EXIT_RUN_FAILED = 3
#: Interrupted (Ctrl-C, SIGTERM, SIGHUP): data and report kept, but a cancelled CI job must not look green.
EXIT_INTERRUPTED = 4
#: Ctrl-C before a run folder exists (the shell's convention: 128 + SIGINT).
EXIT_CTRL_C = 130
