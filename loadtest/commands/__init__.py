"""The commands of `loadtest`, one module (or package) each, run in the parent process: they
start the mock and Locust as child processes through the process layer (`loadtest.children`
on `loadtest.processes`) and never import Locust or gevent. Each has `add_arguments(parser)`
and one entry, `<command>_command(args) -> exit code` (`loadtest.exitcodes`), which
`loadtest.cli` dispatches to."""
