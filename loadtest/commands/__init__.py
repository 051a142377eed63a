"""The commands of `loadtest`, one module each, run in the parent process: they start the mock and
Locust as child processes (`loadtest.processes`) and never import Locust or gevent."""
