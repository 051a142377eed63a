"""The Locust users, shipped inside the package.

`LOCUSTFILE` is the path Locust loads (`locust -f`); `loadtest run|ui|capacity|worker` use
it, so an installed tool needs no checkout. This `__init__` never imports Locust (the
`loadtest` parent process must stay free of gevent's monkey-patching): only `chat.py`,
which Locust itself imports, does.
"""

from pathlib import Path

LOCUSTFILE = Path(__file__).resolve().with_name("chat.py")
